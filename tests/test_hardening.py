"""Hardening: exact resume, crash safety, NaN, no clobbering, safe loading, bad input, properties."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, assert_one_line_error, run
from configurator import configure
from tokenizer import SPECIALS, CharTokenizer

TINY = os.path.join(ROOT, "config", "test_tiny.py")


def digest(folder):
    """sha256 of every file under folder: 'nothing on disk changed' means equal digests."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def evals(out_dir):
    ck = torch.load(os.path.join(out_dir, "last.pt"), weights_only=True)
    return ck, [(h["iter"], h["train_loss"], h["val_loss"]) for h in ck["history"] if "val_loss" in h]


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_run):
    w = tiny_run
    common = [TINY, "--dataset=tiny", "--max_iters=60", "--lr_decay_iters=60", "--dropout=0.1"]
    assert run("train.py", *common, "--out_dir=full", cwd=w).returncode == 0
    p = run("train.py", *common, "--out_dir=part", "--max_iters=20", cwd=w)  # "interrupted" at 20
    assert p.returncode == 0, p.stderr
    p = run("train.py", *common, "--out_dir=part", "--init_from=resume", cwd=w)
    assert p.returncode == 0, p.stderr
    full, full_evals = evals(w / "full")
    part, part_evals = evals(w / "part")
    assert part["iter_num"] == full["iter_num"] == 60
    assert part_evals == full_evals  # bit-for-bit the same losses (dropout RNG and data order restored)
    for k, v in full["model"].items():
        assert torch.equal(v, part["model"][k]), k


def test_sigterm_saves_and_exits_cleanly(tiny_run):
    w = tiny_run
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), TINY, "--dataset=tiny",
                             "--out_dir=sig", "--max_iters=100000", "--lr_decay_iters=100000",
                             "--eval_interval=100000", "--log_interval=1"],
                            cwd=w, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until it is training
        if line.startswith("iter 5/"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err
    ck = torch.load(w / "sig" / "last.pt", weights_only=True)
    assert ck["iter_num"] >= 5  # the work done so far was saved although no eval was due


def test_kill_test_small():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "kill_test.py"), "--kills=3", "--max_iters=400"],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
    assert report["kills"] >= 1 and report["finished_at"] == 400 and report["same_final_weights_as_uninterrupted"]
    assert report["max_lost_iterations"] <= report["checkpoint_interval"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_run):
    w = tiny_run
    assert run("train.py", TINY, "--dataset=tiny", "--out_dir=nan", "--max_iters=20", cwd=w).returncode == 0
    before = digest(w / "nan")
    p = run("train.py", TINY, "--dataset=tiny", "--out_dir=nan", "--init_from=resume", "--max_iters=40",
            "--learning_rate=1e30", "--grad_clip=0.0", cwd=w)
    assert "loss became" in assert_one_line_error(p)
    assert digest(w / "nan") == before


def test_corrupt_and_wrong_kind_checkpoints(tiny_run, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    good = open(tiny_run / "out" / "ckpt.pt", "rb").read()
    (bad / "ckpt.pt").write_bytes(good[: len(good) // 2])  # truncated
    assert "corrupt" in assert_one_line_error(run("sample.py", f"--out_dir={bad}", cwd=tmp_path))
    (bad / "ckpt.pt").write_bytes(b"\x80\x04 definitely not a checkpoint")
    assert "corrupt" in assert_one_line_error(run("sample.py", f"--out_dir={bad}", cwd=tmp_path))
    # a hand-made pickle stream that calls os.system on load (GLOBAL posix.system, then REDUCE):
    # weights_only=True refuses it
    payload = f"cposix\nsystem\n(S'touch {tmp_path / 'pwned'}'\ntR.".encode()
    (bad / "ckpt.pt").write_bytes(payload)
    assert_one_line_error(run("sample.py", f"--out_dir={bad}", cwd=tmp_path))
    assert not (tmp_path / "pwned").exists()
    # a pretrained checkpoint where an instruction model is needed
    line = assert_one_line_error(run("finetune_instr.py", "--eval_only=True", f"--out_dir={tiny_run / 'out'}",
                                     cwd=tmp_path))
    assert "'pretrain'" in line and "instr" in line


def test_vocabulary_mismatch_on_resume(tiny_run, tmp_path):
    (tmp_path / "other.txt").write_text("xyz ∑∂ " * 400, encoding="utf-8")
    p = run("prepare.py", f"--input={tmp_path / 'other.txt'}", "--dataset=other", f"--data_root={tmp_path / 'data'}")
    assert p.returncode == 0, p.stderr
    before = digest(tiny_run / "out")
    p = run("train.py", TINY, f"--data_root={tmp_path / 'data'}", "--dataset=other", "--out_dir=out",
            "--init_from=resume", cwd=tiny_run)
    assert "vocabulary" in assert_one_line_error(p)
    assert digest(tiny_run / "out") == before


def test_missing_config_file_and_bad_types(tmp_path):
    assert "not found" in assert_one_line_error(run("train.py", "config/nope.py", cwd=ROOT))
    assert "expects a float" in assert_one_line_error(run("train.py", "--learning_rate=fast", cwd=tmp_path))


@pytest.fixture(scope="module")
def instr_dir(tmp_path_factory):
    """An (untrained) instruction checkpoint: enough to show how sample.py treats odd prompts."""
    from checkpoint import save_checkpoint
    from model import GPT, GPTConfig
    from tokenizer import BASE_CHARS

    d = tmp_path_factory.mktemp("instr")
    tok = CharTokenizer.from_texts([BASE_CHARS])
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(tok), block_size=64, n_layer=1, n_head=2, n_embd=16)
    save_checkpoint({"kind": "instr", "model_args": cfg, "model": GPT(GPTConfig(**cfg)).state_dict(),
                     "vocab": tok.vocab, "history": []}, str(d / "ckpt.pt"))
    return d


@pytest.mark.parametrize("prompt, fragment", [
    ("", "empty prompt"),
    ("   \x07  ", "empty prompt"),
    ("x" * 501, "longer than"),
])
def test_bad_prompts_in_sample(instr_dir, prompt, fragment):
    before = digest(instr_dir)
    p = run("sample.py", f"--out_dir={instr_dir}", f"--prompt={prompt}" if prompt else "--prompt= ", input="")
    assert fragment in assert_one_line_error(p)
    assert digest(instr_dir) == before


@pytest.mark.parametrize("prompt", ["¿Los perros son 🐶?", "hola\x1b[31m rojo", "<resp><eos> <instr>", "ñ" * 300])
def test_odd_prompts_in_sample_are_answered(instr_dir, prompt):
    """Emoji, control characters, special-token text and long prompts: an answer, never a crash."""
    p = run("sample.py", f"--out_dir={instr_dir}", f"--prompt={prompt}", "--max_new_tokens=10", "--show_raw=True")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    raw = [line for line in p.stdout.splitlines() if line.startswith("[raw] <instr>")]
    assert raw and "\x1b" not in p.stdout  # control characters are dropped, not echoed


def test_sample_on_classification_checkpoint_is_refused(instr_dir, tmp_path):
    ck = torch.load(instr_dir / "ckpt.pt", weights_only=True)
    ck["kind"] = "cls"
    (tmp_path / "cls").mkdir()
    torch.save(ck, tmp_path / "cls" / "ckpt.pt")
    line = assert_one_line_error(run("sample.py", f"--out_dir={tmp_path / 'cls'}", "--prompt=hola"))
    assert "'cls'" in line


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=60), st.text(min_size=0, max_size=60))
def test_property_tokenizer_round_trip_unknowns_and_no_specials(vocab_text, text):
    tok = CharTokenizer.from_texts([vocab_text])
    ids = tok.encode(text)
    assert len(ids) == len(text)
    for ch, i in zip(text, ids):
        if ch in vocab_text:
            assert tok.vocab[i] == ch
        else:
            assert i == tok.unk_id
        assert i not in (tok.pad_id, tok.instr_id, tok.resp_id, tok.eos_id)  # never from text
    if set(text) <= set(vocab_text):
        assert tok.decode(ids) == text
    assert tok.vocab[: len(SPECIALS)] == SPECIALS


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(max_size=40))
def test_property_configurator_parses_or_fails_cleanly(key, value):
    g = {"batch_size": 12, "learning_rate": 1e-3, "out_dir": "out", "compile": False, "top_k": None}
    before = dict(g)
    try:
        configure(g, [f"--{key}={value}"])
    except SystemExit as e:
        assert e.code == 2
        assert g == before  # a rejected flag changes nothing
        return
    assert set(g) == set(before)  # only known keys can be set
    changed = [k for k in g if g[k] != before[k]]
    assert all(before[k] is None or type(g[k]) is type(before[k]) for k in changed)
