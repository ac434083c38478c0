"""The shipped Spanish data: schema, sizes, no leaks between splits, no repetition, full coverage."""
import collections
import glob
import json
import os
import unicodedata

from conftest import ROOT, run
from corpus import read_text
from tokenizer import clean_text

ES = os.path.join(ROOT, "data", "es")
FACTS = ("fact:perro", "fact:gato", "fact:capital")


def norm(s):
    """lowercase, accents stripped (ñ kept), punctuation removed, spaces collapsed"""
    s = s.lower().replace("ñ", "\0")
    s = "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn").replace("\0", "ñ")
    s = "".join(c if c.isalnum() or c == "ñ" else " " for c in s)
    return " ".join(s.split())


def read_jsonl(name):
    with open(os.path.join(ES, "instructions", name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_tsv(name):
    with open(os.path.join(ES, "sentiment", name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "text\tlabel"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 2 and r[0].strip() for r in rows)
    return rows


def test_corpus_size_topics_and_no_repetition():
    files = sorted(glob.glob(os.path.join(ES, "corpus", "*.txt")))
    assert len(files) >= 40  # one topic per file
    text = "\n".join(open(f, encoding="utf-8").read() for f in files)
    assert len(text) >= 150_000
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    assert len(paragraphs) == len(set(paragraphs)), "a paragraph is repeated"
    lines = collections.Counter(line.strip() for line in text.splitlines() if line.strip())
    assert max(lines.values()) <= 2
    for needle in ("Canidae", "Felidae", "capital de Costa Rica", "¿", "¡", "ñ"):
        assert needle in text


def test_instruction_files_schema_sizes_and_no_leak():
    train, test, test2 = read_jsonl("train.jsonl"), read_jsonl("test.jsonl"), read_jsonl("test2.jsonl")
    test3, test4 = read_jsonl("test3.jsonl"), read_jsonl("test4.jsonl")
    for rows in (train, test, test2, test3, test4):
        for r in rows:
            assert set(r) == {"prompt", "response", "kind"} and r["prompt"].strip() and r["response"].strip()
            assert r["kind"] in FACTS + ("abstain",) or r["kind"].startswith("fact:")
    for rows, minimum in ((train, 60), (test, 20), (test2, 20), (test3, 9), (test4, 20)):
        counts = collections.Counter(r["kind"] for r in rows)
        for kind in FACTS + ("abstain",):
            assert counts[kind] >= minimum, (kind, counts[kind])
    # one consistent answer per kind; abstentions say "No lo sé"
    for kind in FACTS + ("abstain",):
        assert len({r["response"] for r in train + test + test2 + test3 + test4 if r["kind"] == kind}) == 1
    assert all(r["response"].startswith("No lo sé") for r in train + test + test2 + test3 + test4
               if r["kind"] == "abstain")
    near_misses = [r for r in train + test if r["kind"] == "abstain" and any(
        w in norm(r["prompt"]) for w in ("perro", "gato", "costa rica", "capital"))]
    assert len(near_misses) >= 40
    # the four held-out files share no prompt with training or with each other
    train_prompts = {norm(r["prompt"]) for r in train}
    assert not [r["prompt"] for r in test + test2 + test3 + test4 if norm(r["prompt"]) in train_prompts]
    held = (test, test2, test3, test4)
    for i, a in enumerate(held):
        for b in held[i + 1:]:
            assert not {norm(r["prompt"]) for r in a} & {norm(r["prompt"]) for r in b}
    for rows in held:
        assert len({norm(r["prompt"]) for r in rows}) == len(rows)
    # test4 was filtered harder: nothing within difflib ratio 0.9 of a training question or conversation
    # turn (near_copies compares the pairs that share two word pairs or more)
    chat = read_jsonl("chat_train.jsonl")
    trained = [r["prompt"] for r in train + chat] + [q for c in chat for q, _ in c["history"]]
    close, compared = near_copies([r["prompt"] for r in test4], trained, threshold=0.9)
    assert compared > 100 and not close, close[:3]


def test_sentiment_splits_balanced_and_disjoint():
    splits = {name: read_tsv(f"{name}.tsv") for name in ("train", "val", "test")}
    total = sum(len(rows) for rows in splits.values())
    assert total >= 600
    assert 0.6 < len(splits["train"]) / total < 0.8 and 0.15 < len(splits["test"]) / total < 0.25
    labels = collections.Counter(r[1] for rows in splits.values() for r in rows)
    assert set(labels) == {"positivo", "negativo"} and abs(labels["positivo"] - labels["negativo"]) <= total * 0.05
    seen = {}
    for name, rows in splits.items():
        for text, _ in rows:
            key = text.strip().lower()
            assert key not in seen, f"duplicate across {seen.get(key)} and {name}: {text}"
            seen[key] = name


def test_prepared_vocabulary_covers_every_shipped_character(tmp_path):
    p = run("prepare.py", f"--data_root={tmp_path}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    vocab = set(json.load(open(tmp_path / "es" / "meta.json", encoding="utf-8"))["vocab"])
    for path in glob.glob(os.path.join(ES, "**", "*.*"), recursive=True):
        if path.endswith((".txt", ".jsonl", ".tsv")) and "heldout" not in path:
            if path.endswith(".txt"):  # the books are Latin-1, with licence headers: read as prepare.py does
                text = clean_text(read_text(path)[0])
            else:
                text = open(path, encoding="utf-8").read()
            if path.endswith(".jsonl"):
                text = "".join(json.dumps(json.loads(line), ensure_ascii=False) for line in text.splitlines())
            missing = set(text) - vocab - {"\n"}
            assert not missing, (path, missing)


def near_copies(texts, labelled, threshold=0.7):
    """(text, labelled text) pairs within difflib ratio `threshold` after norm(), checked for every pair that
    shares at least two word pairs (all 3.6M pairs of the opinions take minutes; the five near copies once
    found shared four or more). Returns the close pairs and how many pairs were compared."""
    import difflib

    def word_pairs(s):
        w = s.split()
        return {(a, b) for a, b in zip(w, w[1:])}
    labelled = [norm(t) for t in labelled]
    index = collections.defaultdict(list)  # word pair -> the labelled texts that have it
    for j, t in enumerate(labelled):
        for g in word_pairs(t):
            index[g].append(j)
    close, compared = [], 0
    for p in map(norm, texts):
        shared = collections.Counter(j for g in word_pairs(p) for j in index.get(g, ()))
        sm = difflib.SequenceMatcher(None, autojunk=False)
        sm.set_seq2(p)  # difflib indexes its second text once; the first is swapped below
        for j in (j for j, n in shared.items() if n >= 2):
            sm.set_seq1(labelled[j])
            compared += 1
            if sm.real_quick_ratio() >= threshold and sm.quick_ratio() >= threshold and sm.ratio() >= threshold:
                close.append((p, labelled[j]))
    return close, compared


def test_opinions_are_unlabelled_and_disjoint_from_the_sentiment_set():
    """The opinions mixed into pretraining must not contain the labelled reviews (or near copies):
    otherwise pretraining would see the test set."""
    files = sorted(glob.glob(os.path.join(ES, "reviews", "*.txt")))
    paragraphs = [p.strip() for f in files for p in open(f, encoding="utf-8").read().split("\n\n") if p.strip()]
    assert len(paragraphs) >= 2000 and len({norm(p) for p in paragraphs}) == len(paragraphs)
    labelled = [t for name in ("train.tsv", "val.tsv", "test.tsv") for t, _ in read_tsv(name)]
    assert not {norm(p) for p in paragraphs} & {norm(t) for t in labelled}
    close, compared = near_copies(paragraphs, labelled)
    assert compared > 1000 and not close, close[:3]


def test_near_copy_check_catches_a_real_paraphrase():
    """The check above can fail: an opinion removed on 2026-12-01 as a near copy of a labelled review
    (ratio 0.71) is caught, and an unrelated one is not."""
    labelled = [t for name in ("train.tsv", "val.tsv", "test.tsv") for t, _ in read_tsv(name)]
    removed = ("Reservamos mesa para las nueve y nos sentaron a las diez menos cuarto. Encima se habían quedado "
               "sin el pescado del día. Mal, muy mal.")
    close, _ = near_copies([removed, "Me encantó el concierto de anoche, volvería mañana mismo."], labelled)
    assert [p for p, _ in close] == [norm(removed)]


def test_books_match_their_documented_checksums():
    import hashlib
    import re
    card = open(os.path.join(ROOT, "data", "README.md"), encoding="utf-8").read()
    books = sorted(glob.glob(os.path.join(ES, "books", "*.txt")) + glob.glob(os.path.join(ES, "heldout", "*.txt")))
    assert len(books) == 15 and len(glob.glob(os.path.join(ES, "heldout", "*.txt"))) == 1
    for path in books:
        name = os.path.basename(path)
        row = re.search(rf"^\| `?{re.escape(name)}`? \|.*$", card, re.M)
        assert row, f"{name} is not listed in data/README.md"
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() in row.group(0), name


def test_chat_files_need_their_context_and_share_nothing_with_training():
    """chat_{train,test}.jsonl (data/es/instructions/make_chat.py): follow-ups after 1-3 turns, context
    turns to ignore, checkable system prompts; the test conversations share no question (final or
    earlier) with any training file, and the generator rebuilds the shipped files exactly."""
    import importlib.util
    chat_train, chat_test = read_jsonl("chat_train.jsonl"), read_jsonl("chat_test.jsonl")
    for r in chat_train + chat_test:
        assert set(r) == {"system", "history", "prompt", "response", "kind"}
        assert all(len(t) == 2 and t[0].strip() and t[1].strip() for t in r["history"])
        group = r["kind"].split("/")[0]
        assert group in ("followup", "context", "system")
        assert (group == "system") == bool(r["system"]) and (group == "system" or 1 <= len(r["history"]) <= 3)
    counts = collections.Counter(r["kind"].split("/")[0] for r in chat_test)
    assert counts["followup"] >= 80 and counts["system"] >= 60 and counts["context"] >= 20
    assert {r["kind"] for r in chat_test if r["kind"].startswith("followup/")} == {
        "followup/fact:perro", "followup/fact:gato", "followup/fact:capital", "followup/abstain"}
    training = {norm(r["prompt"]) for r in read_jsonl("train.jsonl") + chat_train}
    training |= {norm(q) for r in chat_train for q, _ in r["history"]}
    assert not [r["prompt"] for r in chat_test if norm(r["prompt"]) in training]
    assert not [q for r in chat_test for q, _ in r["history"] if norm(q) in training]
    spec = importlib.util.spec_from_file_location("make_chat", os.path.join(ES, "instructions", "make_chat.py"))
    make_chat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_chat)
    import random
    assert make_chat.build("test", random.Random(2)) == chat_test
    assert make_chat.build("train", random.Random(1)) == chat_train


def test_shipped_bpe_backbone_is_the_demo_model_trained_longer():
    """pretrained/es-bpe2048-4x128 (config/finetune_instr.py starts from it): weights only, loads with
    weights_only=True, the demo's architecture and a BPE vocabulary of 2,048 with the six specials."""
    import torch

    from checkpoint import load_checkpoint, model_from_checkpoint
    from tokenizer import SPECIALS
    ckpt = load_checkpoint(os.path.join(ROOT, "pretrained", "es-bpe2048-4x128"))
    assert ckpt["kind"] == "pretrain" and "optimizer" not in ckpt and ckpt["iter_num"] == 5400
    model, tok = model_from_checkpoint(ckpt)
    assert (model.config.n_layer, model.config.n_embd, model.config.pos, model.config.vocab_size) == (4, 128, "rope", 2048)
    assert tok.specials == SPECIALS and tok.decode(tok.encode("¿Los perros son caninos?")) == "¿Los perros son caninos?"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # bf16 on disk, float32 once loaded
