"""The byte-level BPE tokenizer (tokenizer.py) and the pipeline on it: prepare.py --tokenizer=bpe,
train + resume, sample, both finetunes, evaluate, the app's token view, and the bad inputs."""
import json
import math
import os
import re
import shutil
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, TINY, assert_one_line_error, digest, run, run_many
from tokenizer import (BYTE0, SPECIALS, SPLIT_PATTERN, BPETokenizer, CharTokenizer, StreamDecoder, clean_text,
                       load_tokenizer)

A, B, C, D = (BYTE0 + ord(ch) for ch in "abcd")


def test_first_merges_are_the_ones_computed_by_hand():
    # chunk counts: abab x3, ab x2, ba x1. Pairs: (a,b) = 3*2 + 2 = 8, (b,a) = 3*1 + 1 = 4
    # merge 1: (a,b) -> M (the first id after the bytes). abab = [M, M]: (M,M) = 3; ab = [M]; ba: (b,a) = 1
    # merge 2: (M,M) -> M+1. Left: (b,a) once, and a pair seen once is not merged: no merge 3
    M = BYTE0 + 256
    tok, made = BPETokenizer.train(Counter({"abab": 3, "ab": 2, "ba": 1}), vocab_size=M + 3)
    assert tok.merges == [(A, B), (M, M)] and made == 2 and len(tok) == M + 2
    assert tok.encode("abab") == [M + 1] and tok.encode("aba") == [M, A] and tok.encode("ba") == [B, A]
    assert tok.token_bytes(M + 1) == b"abab"
    # ties go to the smallest pair of ids, so training is deterministic: (a,b) before (c,d)
    tok, _ = BPETokenizer.train(Counter({"cd": 2, "ab": 2}), vocab_size=BYTE0 + 256 + 2)
    assert tok.merges == [(A, B), (C, D)]


def test_pre_split_suits_spanish_and_rebuilds_the_text():
    text = "¿Los perros, 12345 años?\n\n  hola_mundo  "
    chunks = re.findall(SPLIT_PATTERN, text)
    assert chunks == ["¿", "Los", " perros", ",", " 123", "45", " años", "?", "\n\n ", " hola", "_", "mundo", "  "]
    assert "".join(chunks) == text
    # a text without spaces (Chinese, a line of dashes) is cut into chunks of at most 64 characters,
    # so that BPE training never rescans one huge chunk at every merge
    for text in ("猫" * 150, "-" * 150, "_" * 150, "a" * 150):
        assert [len(c) for c in re.findall(SPLIT_PATTERN, text)] == [64, 64, 22]


@pytest.fixture(scope="module")
def es_tok():
    """A BPE of 600 ids learned from one shipped topic text."""
    with open(os.path.join(ROOT, "data", "es", "corpus", "a_gatos.txt"), encoding="utf-8") as f:
        counts = Counter()
        BPETokenizer.count_chunks(clean_text(f.read()), counts)
    tok, made = BPETokenizer.train(counts, 600)
    assert made == 600 - BYTE0 - 256
    return tok


TRICKY = SPECIALS + ["<resp>hola", "😀", "👩\u200d👩\u200d👧", "e\u0301", "\x07", "\r\n", "ñ", "¿¡", " perro", "\x00", "\u0958"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(TRICKY)), max_size=8).map("".join))
def test_property_encode_decode_is_the_identity_and_never_a_special(es_tok, raw):
    text = clean_text(raw)  # what prepare.py and every prompt go through
    ids = es_tok.encode(text)
    assert es_tok.decode(ids) == text
    assert all(i >= BYTE0 for i in ids)  # typing "<resp>" gives bytes, never the special id
    # streamed one token at a time, the text comes out whole and never with half a character
    dec = StreamDecoder(es_tok)
    pieces = [dec.add(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text and ("\ufffd" in text or not any("\ufffd" in p for p in pieces))
    # state() -> load_tokenizer() gives the same tokenizer (what meta.json and checkpoints hold)
    assert load_tokenizer(json.loads(json.dumps(es_tok.state()))).encode(text) == ids


def test_stream_decoding_holds_a_character_split_across_tokens(es_tok):
    raw = BPETokenizer([])  # bytes only: every multi-byte character is split
    ids = raw.encode("ñ😀")
    assert len(ids) == 6
    dec = StreamDecoder(raw)
    assert [dec.add(i) for i in ids] == ["", "ñ", "", "", "", "😀"] and dec.flush() == ""
    assert raw.piece(ids[0]) == "<0xC3>" and raw.decode(ids[:1]) == "\ufffd"  # shown, never a crash
    dec = StreamDecoder(raw)
    assert dec.add(ids[0]) == "" and dec.flush() == "\ufffd"  # cut off mid-character at the end
    assert es_tok.piece(es_tok.encode(" gato")[0]).startswith("␣")


def test_char_bits_per_byte_computed_two_ways_agree(tiny_run):
    """evaluate.py's bits per byte of a char model (windows, nats over UTF-8 bytes) equals the plain
    computation: mean loss per character over the same text x characters / bytes / ln 2."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    from evaluate import text_row
    model, tok = model_from_checkpoint(load_checkpoint(str(tiny_run / "out")))
    assert isinstance(tok, CharTokenizer)
    text = "El perro número 7 es un canino."  # shorter than the window: one forward pass scores it all
    ctx = torch.autocast("cpu", enabled=False)
    row = text_row(model, tok, text, ctx)
    ids = tok.encode("\n\n" + text)
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    mean_nats = F.cross_entropy(logits[0, 1:], torch.tensor(ids[2:])).item()  # the text's characters only
    assert row["bits_per_byte"] == pytest.approx(mean_nats * len(text) / len(text.encode()) / math.log(2), rel=1e-4)


CORPUS = "".join(f"El perro número {i} es un canino y el gato es un felino. ¿Sí? ¡Claro! " for i in range(400))


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bpe")
    (work / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    p = run("prepare.py", "--input=corpus.txt", "--dataset=bpe", "--tokenizer=bpe", "--vocab_size=320", cwd=work)
    assert p.returncode == 0, p.stderr
    assert "characters per token" in p.stdout and f"BPE: {320 - BYTE0 - 256} merges" in p.stdout
    p = run("train.py", TINY, "--dataset=bpe", "--out_dir=out", "--max_iters=30", cwd=work)
    assert p.returncode == 0, p.stderr
    # both finetunes from the BPE backbone, side by side
    instr, cls = run_many([
        ("finetune_instr.py", "--init_from=out", "--out_dir=out-instr", "--max_iters=4", "--eval_interval=2",
         "--batch_size=8", "--test_data=", "--device=cpu",
         f"--data={os.path.join(ROOT, 'data', 'es', 'instructions', 'train.jsonl')}"),
        ("finetune_cls.py", "--init_from=out", "--out_dir=out-cls", "--max_iters=6", "--eval_interval=3",
         "--batch_size=8", "--device=cpu", f"--data={os.path.join(ROOT, 'data', 'es', 'sentiment')}")], cwd=work)
    assert instr.returncode == 0, instr.stderr
    assert cls.returncode == 0 and "accuracy" in cls.stdout, cls.stderr
    return work


def test_bpe_prepare_writes_merges_and_a_checkpoint_trains_resumes_and_samples(bpe_run):
    import numpy as np
    meta = json.load(open(bpe_run / "data" / "bpe" / "meta.json", encoding="utf-8"))
    tok = load_tokenizer(meta)
    assert meta["tokenizer"] == "bpe" and meta["dtype"] == "uint16" and len(tok) == meta["vocab_size"] == 320
    train = np.fromfile(bpe_run / "data" / "bpe" / "train.bin", dtype=np.uint16)
    assert CORPUS.startswith(tok.decode(train[:200]))
    assert len(train) + meta["val_tokens"] < len(CORPUS) / 2  # merges: far fewer tokens than characters
    ck = torch.load(bpe_run / "out" / "ckpt.pt", weights_only=True)
    assert ck["tokenizer"] == "bpe" and ck["merges"] == meta["merges"] and "vocab" not in ck
    shutil.copytree(bpe_run / "out", bpe_run / "out-r")
    resume, sample, evaluate, bench = run_many([
        ("train.py", TINY, "--dataset=bpe", "--out_dir=out-r", "--init_from=resume", "--max_iters=40"),
        ("sample.py", "--out_dir=out", "--start=El perro", "--max_new_tokens=40", "--temperature=0", "--device=cpu"),
        ("evaluate.py", "--out_dir=out", "--data=bpe", "--text=corpus.txt", "--json=True", "--device=cpu"),
        ("bench.py", "--mode=sample", "--out_dir=out", "--runs=1", "--max_new_tokens=8", "--prompt_len=16"),
    ], cwd=bpe_run)
    rows = json.loads(evaluate.stdout[evaluate.stdout.index("["):])
    assert evaluate.returncode == 0 and len(rows) == 2 and all(r["tokens"] < r["bytes"] / 2 for r in rows), evaluate.stderr
    assert bench.returncode == 0 and "greedy outputs identical: True" in bench.stdout, bench.stderr
    assert resume.returncode == 0 and "resum" in resume.stdout.lower(), resume.stderr
    assert torch.load(bpe_run / "out-r" / "ckpt.pt", weights_only=True)["iter_num"] == 40
    # streamed token by token, the output is the decoding of all the ids at once: no character cut in two
    from checkpoint import load_checkpoint, model_from_checkpoint
    model, tok = model_from_checkpoint(load_checkpoint(str(bpe_run / "out")))
    start = tok.encode("El perro")
    ids = model.generate(torch.tensor([start]), 40, temperature=0.0)[0, len(start):].tolist()
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout == "El perro" + tok.decode(ids) + "\n---------------\n"
    assert torch.load(bpe_run / "out-cls" / "ckpt.pt", weights_only=True)["merges"] == meta["merges"]


def test_bpe_instruction_finetune_answers_and_shows_its_tokens_in_the_app(bpe_run, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("LLMFS_OUT_ROOT", str(bpe_run))
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=60).run()
    at.toggle(key="faq").set_value(False).run()
    at.toggle(key="tokens").set_value(True).run()
    at.slider(key="max_new_tokens").set_value(8).run()
    at.chat_input[0].set_value("¿Los perros son caninos?").run()
    assert not at.exception, [e.value for e in at.exception]
    m = at.session_state["messages"][-1]
    assert m["source"] == "modelo" and len(m["answer_ids"]) >= 1
    tok = load_tokenizer(torch.load(bpe_run / "out-instr" / "ckpt.pt", weights_only=True))
    prompt_view = "".join(f"⟨{tok.piece(i)}⟩" for i in m["prompt_ids"])
    assert m["token_view"][0] == prompt_view and prompt_view.startswith("⟨<instr>⟩")
    assert "⟨␣perros⟩" in prompt_view or "⟨␣per" in prompt_view  # word pieces, not characters
    assert at.chat_message[-1].code[0].value == "\n".join(m["token_view"])


def test_bpe_bad_inputs_are_one_line_and_change_nothing(bpe_run, tiny_run):
    shutil.copytree(tiny_run / "data" / "tiny", bpe_run / "data" / "tiny", dirs_exist_ok=True)
    shutil.copytree(tiny_run / "out", bpe_run / "out-char", dirs_exist_ok=True)
    before = digest(bpe_run)
    small, large, too_few, char_on_bpe, bpe_on_char = run_many([
        ("prepare.py", "--input=corpus.txt", "--dataset=bpe", "--tokenizer=bpe", "--vocab_size=200"),
        ("prepare.py", "--input=corpus.txt", "--dataset=bpe", "--tokenizer=bpe", "--vocab_size=10000000"),
        ("prepare.py", "--input=corpus.txt", "--dataset=bpe", "--tokenizer=bpe", "--vocab_size=5000"),
        ("train.py", TINY, "--dataset=bpe", "--out_dir=out-char", "--init_from=resume", "--max_iters=50"),
        ("train.py", TINY, "--dataset=tiny", "--out_dir=out", "--init_from=resume", "--max_iters=50"),
    ], cwd=bpe_run)
    assert f"at least {BYTE0 + 257}" in assert_one_line_error(small)
    assert "at most" in assert_one_line_error(large)
    line = assert_one_line_error(too_few)
    assert "corpus too small for --vocab_size=5000" in line and re.search(r"only [\d,]+ merges were possible", line)
    assert "char" in assert_one_line_error(char_on_bpe) and "bpe" in assert_one_line_error(bpe_on_char)
    assert digest(bpe_run) == before
