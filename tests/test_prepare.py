"""prepare.py: .txt/.jsonl/.parquet/folders to train.bin/val.bin/meta.json, the named download
(checked on a local file), and its one-line errors."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, run, run_many
from tokenizer import SPECIALS, CharTokenizer


def _prepared(work, dataset):
    meta = json.load(open(work / "data" / dataset / "meta.json", encoding="utf-8"))
    train = np.fromfile(work / "data" / dataset / "train.bin", dtype=np.uint16)
    val = np.fromfile(work / "data" / dataset / "val.bin", dtype=np.uint16)
    return meta, train, val


def test_prepare_txt_jsonl_parquet_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = ["Hola mundo, ¿qué tal?\r\n" * 40, "Árbol y canción.\x07\n" * 40]
    (tmp_path / "a.txt").write_text(docs[0], encoding="utf-8")
    with open(tmp_path / "a.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    pq.write_table(pa.table({"text": docs, "other": [1, 2]}), tmp_path / "a.parquet")
    (tmp_path / "folder").mkdir()
    for i, d in enumerate(docs):
        (tmp_path / "folder" / f"{i}.txt").write_text(d, encoding="utf-8")
    # the .gz forms, in one folder with an unrelated file (skipped) and a Latin-1 text
    import gzip
    (tmp_path / "mixed").mkdir()
    for name in ("a.txt", "a.jsonl", "a.parquet"):
        (tmp_path / "mixed" / (name + ".gz")).write_bytes(gzip.compress((tmp_path / name).read_bytes()))
    (tmp_path / "mixed" / "notes.md").write_text("ignored")
    (tmp_path / "mixed" / "latin.txt").write_bytes("¿Qué tal? Canción del niño.\n".encode("latin-1") * 30)
    sources = (("a.txt", "t"), ("a.jsonl", "j"), ("a.parquet", "p"), ("folder", "f"), ("mixed", "m"),
               ("a.txt,folder", "c"))
    runs = run_many([("prepare.py", f"--input={src}", f"--dataset={name}") for src, name in sources], cwd=tmp_path)
    for (src, name), p in zip(sources, runs):
        assert p.returncode == 0, p.stderr
        assert "vocabulary" in p.stdout and "train" in p.stdout
        meta, train, val = _prepared(tmp_path, name)
        tok = CharTokenizer(meta["vocab"])
        text = tok.decode(np.concatenate([train, val]).tolist())
        assert "\r" not in text and "\x07" not in text and "¿qué tal?" in text
        assert len(val) < len(train) and meta["vocab"][:len(SPECIALS)] == SPECIALS
    meta_m, _, _ = _prepared(tmp_path, "m")
    assert meta_m["files"] == 4 and meta_m["encodings"] == {"cp1252": 1, "utf-8": 3}
    assert "latin.txt: cp1252 (not UTF-8; no declared charset)" in runs[4].stdout
    assert "skipped 1 file(s) that are not .txt, .jsonl or .parquet: notes.md" in runs[4].stdout
    assert "skipped" not in runs[3].stdout  # a folder of .txt files only
    meta_c, _, _ = _prepared(tmp_path, "c")
    assert meta_c["documents"] == 3  # comma-separated sources: a.txt + the folder's two files
    meta_j, _, _ = _prepared(tmp_path, "j")
    meta_f, _, _ = _prepared(tmp_path, "f")
    assert meta_j["train_tokens"] == meta_f["train_tokens"]  # same two documents, same split
    # every character of the shipped task data is in the vocabulary, whatever the corpus
    shipped = open(os.path.join(ROOT, "data/es/instructions/train.jsonl"), encoding="utf-8").read()
    assert set(json.loads(shipped.splitlines()[0])["response"]) <= set(meta_j["vocab"])



def test_prepare_named_download_from_local_file(tmp_path):
    src = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare", "input.txt")
    if not os.path.isfile(src):
        # CI lays shared/ beside the clone: there a missing file is a failure, not a skip
        assert not os.environ.get("CI"), f"{src} is missing in CI"
        pytest.skip("tinyshakespeare not present beside this clone (../shared)")
    url = "file://" + os.path.abspath(src)
    p = run("prepare.py", "--dataset=shakespeare_char", f"--download_url={url}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    meta, train, val = _prepared(tmp_path, "shakespeare_char")
    assert meta["chars"] == 1115394 and abs(len(val) / (len(train) + len(val)) - 0.1) < 0.01
    p = run("prepare.py", "--dataset=shakespeare_char", cwd=tmp_path)  # cached: no network needed
    assert p.returncode == 0 and "using cached" in p.stdout
    # a wrong file (bad checksum) is refused and not saved
    (tmp_path / "bad.txt").write_text("not shakespeare", encoding="utf-8")
    p = run("prepare.py", "--dataset=shakespeare_char", "--data_root=d2", f"--download_url=file://{tmp_path}/bad.txt",
            cwd=tmp_path)
    assert "sha256" in assert_one_line_error(p) and not (tmp_path / "d2").exists()


def test_prepare_bad_inputs_give_one_line(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02abc")
    (tmp_path / "latin1.txt").write_bytes("canción".encode("latin-1"))
    (tmp_path / "afile").write_text("hola mundo " * 50, encoding="utf-8")
    (tmp_path / "bad.txt.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    (tmp_path / "nodocs").mkdir()
    (tmp_path / "nodocs" / "readme.md").write_text("no text files here")
    (tmp_path / "cut.txt").write_text("*** START OF THE PROJECT GUTENBERG EBOOK X ***\nhola\n" * 3, encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "ints.parquet")  # a text column that is not text
    cases = [(("prepare.py", "--input=missing.txt"), "not found"),
             (("prepare.py", "--input=empty.txt"), "no text"),
             (("prepare.py", "--input=bin.txt"), "binary"),
             (("prepare.py", "--input=latin1.txt", "--encoding=utf-8"), "cannot be decoded as utf-8"),
             (("prepare.py", "--input=latin1.txt", "--encoding=nonsense"), "unknown encoding"),
             (("prepare.py", "--input=nodocs"), "holds no .txt"),
             (("prepare.py", "--input=bad.txt.gz"), "cannot read bad.txt.gz"),
             (("prepare.py", "--input=cut.txt"), "START marker but no END"),
             (("prepare.py", "--dataset=nope"), "unknown dataset"),
             (("prepare.py", "--input=afile", "--data_root=afile"), "cannot write to out_dir"),
             (("prepare.py", "--dataset=shakespeare_char", "--download_url=file:///nonexistent/input.txt"), "--input"),
             (("prepare.py", "--input=,"), "--input names no file"),
             (("prepare.py", "--input=afile", "--dataset="), "--dataset must name a folder"),
             (("prepare.py", "--input=ints.parquet"), "holds int values, not strings")]
    for p, (args, fragment) in zip(run_many([c for c, _ in cases], cwd=tmp_path), cases):
        assert fragment in assert_one_line_error(p), args
    # nothing written
    assert sorted(os.listdir(tmp_path)) == ["afile", "bad.txt.gz", "bin.txt", "cut.txt", "empty.txt", "ints.parquet",
                                           "latin1.txt", "nodocs"]


def test_short_documents_go_whole_to_val(tmp_path):
    """A corpus of many short documents (one-line reviews): val gets whole ones, ~val_fraction of the
    characters, instead of each document's last word; a lone small file is still cut 90/10."""
    reviews = [f"Opinión número {i}: el servicio fue {'bueno' if i % 2 else 'malo'} y volveré." for i in range(200)]
    with open(tmp_path / "r.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": r}, ensure_ascii=False) + "\n" for r in reviews)
    (tmp_path / "one.txt").write_text(reviews[0] * 10, encoding="utf-8")
    for p in run_many([("prepare.py", "--input=r.jsonl", "--dataset=r"), ("prepare.py", "--input=one.txt", "--dataset=one")],
                      cwd=tmp_path):
        assert p.returncode == 0, p.stderr
    meta, train, val = _prepared(tmp_path, "r")
    tok = CharTokenizer(meta["vocab"])
    val_docs = tok.decode(val.tolist()).split("\n\n")[:-1]
    train_docs = tok.decode(train.tolist()).split("\n\n")[:-1]
    assert set(val_docs) <= set(reviews) and set(train_docs) <= set(reviews)  # whole reviews only
    assert len(val_docs) + len(train_docs) == 200 and 15 <= len(val_docs) <= 25  # ~10%
    meta, train, val = _prepared(tmp_path, "one")
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.12  # one document: the classic 90/10 cut


def test_lowercase_is_kept_by_the_tokenizer(tmp_path):
    """--lowercase=True: the vocabulary has no capitals, so the tokenizer saved in meta.json (and from
    there in every checkpoint) lowercases whatever it encodes later: a prompt in capitals is not <unk>."""
    from tokenizer import load_tokenizer
    (tmp_path / "a.txt").write_text("Romeo y Julieta. ¿Dónde estás, Romeo?\n" * 60, encoding="utf-8")
    runs = run_many([("prepare.py", "--input=a.txt", "--dataset=lc", "--lowercase=True"),
                     ("prepare.py", "--input=a.txt", "--dataset=lcb", "--lowercase=True", "--tokenizer=bpe",
                      "--vocab_size=280"),
                     ("prepare.py", "--input=a.txt", "--dataset=plain")], cwd=tmp_path)
    assert all(p.returncode == 0 for p in runs), [p.stderr for p in runs]
    for name in ("lc", "lcb"):
        meta = json.load(open(tmp_path / "data" / name / "meta.json", encoding="utf-8"))
        tok = load_tokenizer(meta)
        assert meta["lowercase"] is True and tok.lowercase
        assert load_tokenizer(tok.state()).lowercase  # what train.py copies into checkpoints
        assert tok.encode("ROMEO, ¿DÓNDE?") == tok.encode("romeo, ¿dónde?")
        assert tok.unk_id not in tok.encode("ROMEO")
        assert tok.encode_array("JULIETA").tolist() == tok.encode("julieta")
    plain = load_tokenizer(json.load(open(tmp_path / "data" / "plain" / "meta.json", encoding="utf-8")))
    assert not plain.lowercase and "lowercase" not in plain.state()  # older checkpoints' state is unchanged
    assert plain.encode("R") != plain.encode("r")
