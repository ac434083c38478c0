"""
The classic baseline a text classifier must beat: TF-IDF features and a logistic regression, in
numpy only (no new dependency). finetune_cls.py prints it in its test table next to the majority
class; `python tfidf.py --data=data/es/sentiment` prints it alone.

    Features: two blocks side by side, each scaled to length 1 -- word 1- and 2-grams, and the
    character 2..5-grams of each word (padded with a space on both sides). A text is the count of
    each n-gram times its rarity over the training texts, idf = 1 + ln((1 + n) / (1 + df)).
    Logistic regression: softmax over labels of W x + b with an L2 penalty of 1/n (the strength
    scikit-learn's default C=1 gives), fitted by full-batch gradient descent with Nesterov momentum.

The features are sparse (a text has a few hundred n-grams out of tens of thousands), kept as CSR
arrays (indptr, indices, values), so a large data set never becomes a dense matrix.
"""
import math
import re

import numpy as np


def word_grams(text):
    words = re.findall(r"\w\w+", text.lower())  # words of 2+ letters
    return [f"w:{w}" for w in words] + [f"w:{a} {b}" for a, b in zip(words, words[1:])]


def char_grams(text):
    out = []
    for w in text.lower().split():
        w = f" {w} "
        out += [w[i:i + n] for n in range(2, 6) for i in range(len(w) - n + 1)]
    return out


class Tfidf:
    """One block of features: fit() learns the n-grams and their idf, transform() gives CSR rows."""

    def __init__(self, grams):
        self.grams = grams

    def fit(self, texts):
        df = {}
        for t in texts:
            for g in set(self.grams(t)):
                df[g] = df.get(g, 0) + 1
        kept = sorted(df)
        self.index = {g: i for i, g in enumerate(kept)}
        self.idf = np.array([1.0 + math.log((1 + len(texts)) / (1 + df[g])) for g in kept])
        return self

    def transform(self, texts):
        """CSR rows (indptr (N+1,), indices (nnz,), values (nnz,)), each row of L2 norm 1."""
        indptr, indices, values = [0], [np.zeros(0, np.int64)], [np.zeros(0)]
        for t in texts:
            counts = {}
            for g in self.grams(t):
                j = self.index.get(g)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            vals = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self.idf[cols]
            indices.append(cols)
            values.append(vals / (np.sqrt((vals ** 2).sum()) or 1.0))
            indptr.append(indptr[-1] + len(cols))
        return np.array(indptr), np.concatenate(indices), np.concatenate(values)


def hstack(A, B, offset):
    """Two CSR blocks with the same rows side by side (B's columns shifted by offset)."""
    (pa, ia, va), (pb, ib, vb) = A, B
    rows_a, rows_b = np.repeat(np.arange(len(pa) - 1), np.diff(pa)), np.repeat(np.arange(len(pb) - 1), np.diff(pb))
    order = np.argsort(np.concatenate([rows_a, rows_b]), kind="stable")
    return (pa + pb, np.concatenate([ia, ib + offset])[order], np.concatenate([va, vb])[order])


def matmul(X, W):
    """(N, F) sparse X times (F, K) dense W -> (N, K): per column, a weighted count of each row's entries."""
    indptr, indices, values = X
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return np.stack([np.bincount(rows, values * W[indices, k], minlength=len(indptr) - 1)
                     for k in range(W.shape[1])], axis=1)


def matmul_t(X, G, n_features):
    """X^T G: (F, N) sparse-transposed times (N, K) dense -> (F, K)."""
    indptr, indices, values = X
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return np.stack([np.bincount(indices, values * G[rows, k], minlength=n_features)
                     for k in range(G.shape[1])], axis=1)


def fit_logreg(X, y, n_classes, n_features, l2, iters=500, lr=1.0):
    """Softmax regression on sparse X by gradient descent with Nesterov momentum. Returns (W, b)."""
    n, F = len(X[0]) - 1, n_features
    W, b = np.zeros((F, n_classes)), np.zeros(n_classes)
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    Y = np.eye(n_classes)[y]  # (N, K) one-hot
    for _ in range(iters):
        Wl, bl = W + 0.9 * vW, b + 0.9 * vb  # look ahead (Nesterov)
        logits = matmul(X, Wl) + bl
        P = np.exp(logits - logits.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        G = (P - Y) / n  # d(mean cross-entropy)/d(logits)
        gW = matmul_t(X, G, F) + l2 * Wl
        vW = 0.9 * vW - lr * gW
        vb = 0.9 * vb - lr * G.sum(0)
        W, b = W + vW, b + vb
    return W, b


def predict(X, W, b):
    return (matmul(X, W) + b).argmax(1)


def tfidf_baseline(train, test, n_classes):
    """train/test: (texts, label ids). Fits on train; returns the test predictions."""
    words, chars = Tfidf(word_grams).fit(train[0]), Tfidf(char_grams).fit(train[0])
    features = lambda texts: hstack(words.transform(texts), chars.transform(texts), len(words.index))
    n_features = len(words.index) + len(chars.index)
    W, b = fit_logreg(features(train[0]), np.array(train[1]), n_classes, n_features, l2=1 / len(train[0]))
    return predict(features(test[0]), W, b)


if __name__ == "__main__":
    from configurator import configure, fail

    data = "data/es/sentiment"
    text_col = "text"
    label_col = "label"
    configure(globals())
    import finetune_cls  # the same data reading and splitting as the GPT classifier
    splits = finetune_cls.load_data(data, text_col, label_col, finetune_cls.val_fraction,
                                    finetune_cls.test_fraction, finetune_cls.seed)
    names = sorted(set(splits["train"][1]))
    if len(names) < 2:
        fail(f"only one label ({', '.join(map(repr, names))}) in the training data of {data}: "
             f"a classifier needs at least two")
    for s in ("val", "test"):
        finetune_cls.check_labels(splits[s][1], names, f"the {s} split of {data}")
    ids = {s: (texts, [names.index(lab) for lab in labels]) for s, (texts, labels) in splits.items()}
    pred = tfidf_baseline(ids["train"], ids["test"], len(names))
    print(f"TF-IDF + logistic regression: test accuracy {(pred == np.array(ids['test'][1])).mean():.3f} "
          f"on {len(pred)} texts of {data}")
