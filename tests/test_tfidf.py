"""tfidf.py, the n-gram baseline: sparse products equal dense ones, features are unit length per
block, and the classifier learns a word-level rule it is shown and nothing from shuffled labels."""
import random

import numpy as np

from tfidf import Tfidf, char_grams, hstack, matmul, matmul_t, tfidf_baseline, word_grams


def dense(X, n_features):
    indptr, indices, values = X
    out = np.zeros((len(indptr) - 1, n_features))
    for r in range(len(indptr) - 1):
        out[r, indices[indptr[r]:indptr[r + 1]]] = values[indptr[r]:indptr[r + 1]]
    return out


def test_sparse_products_and_unit_blocks():
    texts = ["el perro ladra", "el gato duerme mucho", "", "perro perro perro"]
    w, c = Tfidf(word_grams).fit(texts), Tfidf(char_grams).fit(texts)
    X = hstack(w.transform(texts), c.transform(texts), len(w.index))
    F = len(w.index) + len(c.index)
    D = dense(X, F)
    rng = np.random.default_rng(0)
    W, G = rng.normal(size=(F, 3)), rng.normal(size=(4, 3))
    assert np.allclose(matmul(X, W), D @ W) and np.allclose(matmul_t(X, G, F), D.T @ G)
    norms_w, norms_c = np.linalg.norm(D[:, :len(w.index)], axis=1), np.linalg.norm(D[:, len(w.index):], axis=1)
    assert np.allclose(norms_w, [1, 1, 0, 1]) and np.allclose(norms_c, [1, 1, 0, 1])  # the empty text stays 0
    assert "w:el perro" in w.index and " pe" in c.index  # bigrams; char n-grams padded at word edges


def test_learns_a_word_rule_and_not_noise():
    rng = random.Random(0)
    filler = "hoy ayer mañana casa calle mesa libro tren cielo mar río campo".split()
    good, bad = ["excelente", "genial", "maravilloso"], ["horrible", "pésimo", "fatal"]

    def make(n):
        texts, labels = [], []
        for _ in range(n):
            y = rng.randrange(2)
            words = rng.sample(filler, 5) + [rng.choice(bad if y else good)]
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(y)
        return texts, labels

    train, test = make(200), make(100)
    pred = tfidf_baseline(train, test, 2)
    assert (pred == np.array(test[1])).mean() == 1.0
    shuffled = (train[0], rng.sample(train[1], len(train[1])))  # labels unrelated to the texts
    assert abs((tfidf_baseline(shuffled, test, 2) == np.array(test[1])).mean() - 0.5) < 0.2


def test_cli_refuses_labels_train_does_not_have(tmp_path):
    """python tfidf.py --data=FOLDER: a test label never seen in training, or a training split of one
    label, is one line (it used to be a ValueError from list.index)."""
    from conftest import assert_one_line_error, run_many
    rows = [(f"muy {w} {i}", lab) for i in range(12) for w, lab in (("bueno", "pos"), ("malo", "neg"))]
    for name, train, test in (("unknown", rows, rows[:4] + [("ni fu ni fa", "neutro")]),
                              ("single", [r for r in rows if r[1] == "pos"], rows[:4])):
        (tmp_path / name).mkdir()
        for split, part in (("train", train), ("val", train[:4]), ("test", test)):
            (tmp_path / name / f"{split}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in part),
                                                         encoding="utf-8")
    unknown, single = run_many([("tfidf.py", "--data=unknown"), ("tfidf.py", "--data=single")], cwd=tmp_path)
    assert "'neutro'" in assert_one_line_error(unknown)
    assert "only one label ('pos')" in assert_one_line_error(single)
