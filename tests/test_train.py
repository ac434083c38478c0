"""train.py: checkpoints, logs, exact resume, crash safety (kills, SIGTERM, NaN, full disk), what a
resume may change, float16, and the checks on prepared data."""
import glob
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import torch

from conftest import ROOT, TINY, assert_one_line_error, digest, interrupt_while_training, run, run_many


def evals(out_dir):
    ck = torch.load(os.path.join(out_dir, "last.pt"), weights_only=True)
    return ck, [(h["iter"], h["train_loss"], h["val_loss"]) for h in ck["history"] if "val_loss" in h]


def test_train_writes_checkpoint_log_and_resumes(tiny_run):
    work = tiny_run
    ckpt = torch.load(work / "out" / "ckpt.pt", weights_only=True)
    assert ckpt["kind"] == "pretrain" and ckpt["iter_num"] == 40 and len(ckpt["vocab"]) == ckpt["model_args"]["vocab_size"]
    assert "use_sdpa" not in ckpt["model_args"]  # the attention kernel is the run's speed setting, not the model's
    log = [json.loads(line) for line in open(work / "out" / "log.jsonl")]
    assert any("val_loss" in r for r in log) and any("tokens_per_s" in r for r in log)
    assert [r["val_loss"] for r in log if "val_loss" in r][-1] < 3.5  # it learned: uniform is ln(128) ~ 4.85
    # resume continues from the saved iteration up to the new max_iters (in a copy: out/ stays as it is)
    for d in ("res", "res2"):
        os.makedirs(work / d, exist_ok=True)
        for f in ("ckpt.pt", "last.pt", "log.jsonl"):
            (work / d / f).write_bytes((work / "out" / f).read_bytes())
    # ... and scratch into a dir holding a checkpoint refuses, and leaves the checkpoint alone
    before = hashlib.sha256((work / "out" / "ckpt.pt").read_bytes()).hexdigest()
    p, refused, other = run_many([("train.py", TINY, "--dataset=tiny", "--out_dir=res", "--init_from=resume",
                                   "--max_iters=60", "--use_sdpa=False"),
                                  ("train.py", TINY, "--dataset=tiny", "--out_dir=out"),
                                  ("train.py", TINY, "--dataset=tiny", "--out_dir=res2", "--init_from=resume",
                                   "--max_iters=42", "--eval_interval=2", "--batch_size=4", "--learning_rate=1e-3")],
                                 cwd=work)
    assert p.returncode == 0, p.stderr
    assert "resuming from iteration 40" in p.stdout and "attention explicit" in p.stdout
    assert "note: on resume" not in p.stdout  # max_iters and the attention kernel change no training setting
    # --max_iters=60 past the config's lr_decay_iters=40 is fine; 42 with a schedule of 40 too. A run cut
    # short of its schedule says so (its rate never decays): the resume to 42 below is not one
    assert "but the run stops at" not in p.stdout + other.stdout
    # a resume with other training settings says which (this command's apply)
    assert other.returncode == 0 and ("differ from the checkpoint's run: batch_size 8 -> 4, learning_rate 0.003 -> "
                                      "0.001") in other.stdout, other.stdout + other.stderr
    assert torch.load(work / "res" / "last.pt", weights_only=True)["iter_num"] == 60
    assert "already exists" in assert_one_line_error(refused)
    assert hashlib.sha256((work / "out" / "ckpt.pt").read_bytes()).hexdigest() == before


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_run):
    w = tiny_run
    common = [TINY, "--dataset=tiny", "--max_iters=40", "--lr_decay_iters=40", "--dropout=0.1"]
    full, part = run_many([("train.py", *common, "--out_dir=full"),
                           ("train.py", *common, "--out_dir=part", "--max_iters=20")], cwd=w)  # "interrupted" at 20
    assert full.returncode == 0 and part.returncode == 0, full.stderr + part.stderr
    p, = run_many([("train.py", *common, "--out_dir=part", "--init_from=resume")], cwd=w)  # the same 1 thread
    assert p.returncode == 0, p.stderr
    full, full_evals = evals(w / "full")
    part, part_evals = evals(w / "part")
    assert part["iter_num"] == full["iter_num"] == 40
    assert part_evals == full_evals  # bit-for-bit the same losses (batches and dropout masks re-derived)
    for k, v in full["model"].items():
        assert torch.equal(v, part["model"][k]), k


def test_ema_evaluates_and_saves_the_average_and_resumes_exactly(tiny_run):
    w = tiny_run
    common = [TINY, "--dataset=tiny", "--max_iters=40", "--lr_decay_iters=40", "--dropout=0.1"]
    runs = run_many([("train.py", *common, "--out_dir=ema_full", "--ema=0.9"),
                     ("train.py", *common, "--out_dir=ema_part", "--ema=0.9", "--max_iters=20"),
                     ("train.py", *common, "--out_dir=ema_off"),
                     # decay ~0: the "average" is the last step's weights, so all the swapping in and out
                     # must leave training exactly as it is without ema
                     ("train.py", *common, "--out_dir=ema_zero", "--ema=1e-12")], cwd=w)
    assert all(p.returncode == 0 for p in runs), [p.stderr for p in runs]
    p, = run_many([("train.py", *common, "--out_dir=ema_part", "--ema=0.9", "--init_from=resume")], cwd=w)
    assert p.returncode == 0, p.stderr
    (full, full_evals), (part, part_evals) = evals(w / "ema_full"), evals(w / "ema_part")
    (off, off_evals), (zero, zero_evals) = evals(w / "ema_off"), evals(w / "ema_zero")
    assert part_evals == full_evals  # a resume restores the weights being trained and their average
    for k in full["model"]:
        assert torch.equal(full["model"][k], part["model"][k]), k
    for k in full["train_weights"]:
        assert torch.equal(full["train_weights"][k], part["train_weights"][k]), k
    assert "train_weights" not in off
    assert zero_evals == off_evals
    for k, v in zero["train_weights"].items():
        assert torch.equal(v, off["model"][k]) and torch.equal(zero["model"][k], v), k
    # the average is what was evaluated and saved: not the last step's weights, and a different loss
    assert not torch.equal(full["model"]["wte.weight"], full["train_weights"]["wte.weight"])
    assert full_evals[-1][2] != off_evals[-1][2]
    ckpt = torch.load(w / "ema_full" / "ckpt.pt", weights_only=True)  # what sample.py and the finetunes read
    assert all(torch.equal(ckpt["model"][k], full["model"][k]) for k in ckpt["model"])


def test_sigterm_saves_and_exits_cleanly(tiny_run):
    w = tiny_run
    code, out, err = interrupt_while_training("train.py", TINY, "--dataset=tiny", "--out_dir=sig", "--max_iters=100000",
                                              "--lr_decay_iters=100000", "--eval_interval=100000", "--log_interval=1",
                                              cwd=w, sig=signal.SIGTERM)
    assert code == 143 and "Traceback" not in err
    ck = torch.load(w / "sig" / "last.pt", weights_only=True)
    assert ck["iter_num"] >= 5  # the work done so far was saved although no eval was due


def test_kill_test_lands_kills_in_training_and_in_checkpoint_writes():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "kill_test.py"), "--kills=3", "--max_iters=80"],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
    # kills landed after the first checkpoint, in the training loop and inside a checkpoint write
    # (a .tmp left on disk proves the latter), and the run still ends exactly like an uninterrupted one
    assert report["kills_during_training"] >= 1 and report["kills_during_write"] >= 1, report
    assert report["finished_at"] == 80 and report["same_final_weights_as_uninterrupted"] and report["same_val_losses"]
    assert report["max_lost_iterations"] <= report["checkpoint_interval"] and report["tmp_files_left"] == 0


def test_non_finite_loss_stops_before_anything_is_written(tiny_run):
    w = tiny_run
    assert run("train.py", TINY, "--dataset=tiny", "--out_dir=nan", "--max_iters=20", cwd=w).returncode == 0
    before = digest(w / "nan")
    bad = [TINY, "--dataset=tiny", "--out_dir=nan", "--init_from=resume", "--learning_rate=1e30", "--grad_clip=0.0"]
    # a step whose loss is already NaN, and a finite step that leaves NaN weights right before an
    # evaluation (iteration 20's step is fine; the evaluation at 21 sees the damage)
    at_step, at_eval = run_many([("train.py", *bad, "--max_iters=40"),
                                 ("train.py", *bad, "--max_iters=21", "--eval_interval=1")], cwd=w)
    assert "loss became" in assert_one_line_error(at_step)
    assert "non-finite loss" in assert_one_line_error(at_eval)
    assert digest(w / "nan") == before  # last.pt, ckpt.pt and the log as they were


def test_resume_takes_the_architecture_from_the_checkpoint(tiny_run):
    w = tiny_run
    resume = [TINY, "--dataset=tiny", "--out_dir=out", "--init_from=resume", "--max_iters=40"]
    before = digest(w / "out")
    (w / "three.py").write_text("n_layer = 3\n", encoding="utf-8")  # a config file that says otherwise
    layers, block, dropout, config = run_many([("train.py", *resume, "--n_layer=3"), ("train.py", *resume, "--block_size=16"),
                                               ("train.py", *resume, "--dropout=0.1"), ("train.py", *resume, "three.py")],
                                              cwd=w)
    assert "--n_layer=3 conflicts with the checkpoint's n_layer=2" in assert_one_line_error(layers)
    assert "n_layer=3 (from three.py) conflicts with the checkpoint's n_layer=2" in assert_one_line_error(config)
    assert "block_size" in assert_one_line_error(block)
    # a harmless change applies and is said (max_iters=40: nothing left to train, nothing rewritten)
    assert dropout.returncode == 0 and "dropout changed on resume: 0.0 -> 0.1" in dropout.stdout, dropout.stderr
    assert digest(w / "out") == before


def test_unwritable_out_dir_fails_at_start_and_full_disk_keeps_the_checkpoint(tiny_run):
    w = tiny_run
    (w / "afile").write_text("a regular file", encoding="utf-8")
    under_file, first = run_many([("train.py", TINY, "--dataset=tiny", "--out_dir=afile/out"),
                                  ("train.py", TINY, "--dataset=tiny", "--out_dir=full_disk", "--max_iters=20")], cwd=w)
    line = assert_one_line_error(under_file)
    assert "cannot write to out_dir 'afile/out'" in line and "iter" not in under_file.stdout
    # a full disk: files may not grow past 20 kB, smaller than a checkpoint. The save fails in one
    # line, the earlier checkpoint is intact and no .tmp is left behind
    assert first.returncode == 0, first.stderr
    before = digest(w / "full_disk")
    p = run("train.py", TINY, "--dataset=tiny", "--out_dir=full_disk", "--init_from=resume", "--max_iters=40", cwd=w,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)))
    assert "could not write" in assert_one_line_error(p) and "last.pt" in p.stderr
    after = digest(w / "full_disk")
    assert not glob.glob(str(w / "full_disk" / "*.tmp"))
    assert {k: v for k, v in after.items() if k != "log.jsonl"} == {k: v for k, v in before.items() if k != "log.jsonl"}


def test_float16_trains_with_a_grad_scaler(tiny_run):
    w = tiny_run
    p = run("train.py", TINY, "--dataset=tiny", "--out_dir=f16", "--dtype=float16", "--max_iters=20", cwd=w)
    assert p.returncode == 0, p.stderr
    ck, ev = evals(w / "f16")
    assert ck["scaler"]["scale"] > 1 and np.isfinite(ev[-1][2])  # the loss was scaled; the run learned
    fp32 = torch.load(w / "out" / "last.pt", weights_only=True)
    assert fp32["scaler"] == {}  # float32: the scaler is a pass-through


def _write_prepared(folder, train, val, vocab, meta_extra=None):
    os.makedirs(folder, exist_ok=True)
    np.array(train, dtype=np.uint16).tofile(os.path.join(folder, "train.bin"))
    np.array(val, dtype=np.uint16).tofile(os.path.join(folder, "val.bin"))
    meta = {"vocab": vocab, "vocab_size": len(vocab), "dtype": "uint16", "train_tokens": len(train),
            "val_tokens": len(val), **(meta_extra or {})}
    with open(os.path.join(folder, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)


def test_prepared_data_is_validated_and_the_last_token_is_a_target(tmp_path):
    from tokenizer import SPECIALS
    vocab = SPECIALS + list("abcdefgh")
    rng = np.random.default_rng(0)
    ok = rng.integers(len(SPECIALS), len(vocab), 33).tolist()  # block_size 32 + 1: exactly one window fits
    _write_prepared(tmp_path / "data" / "edge", ok, ok, vocab)
    _write_prepared(tmp_path / "data" / "bigid", ok, ok[:-1] + [len(vocab)], vocab)
    _write_prepared(tmp_path / "data" / "size", ok, ok, vocab, {"train_tokens": 40})
    _write_prepared(tmp_path / "data" / "meta", ok, ok, vocab)
    (tmp_path / "data" / "meta" / "meta.json").write_text('{"vocab": [1, 2', encoding="utf-8")
    args = [TINY, "--max_iters=3", "--eval_interval=3", "--eval_iters=1", "--batch_size=2"]
    edge, bigid, size, meta = run_many([("train.py", *args, f"--dataset={d}", f"--out_dir=o-{d}")
                                        for d in ("edge", "bigid", "size", "meta")], cwd=tmp_path)
    # the only window of a 33-token split is tokens 0..32, whose targets end with the last token
    # (the old sampler refused this split: it never drew the last token as a target)
    assert edge.returncode == 0, edge.stderr
    assert f"token id {len(vocab)}, but the vocabulary has {len(vocab)} entries" in assert_one_line_error(bigid)
    assert "meta.json says 40 tokens" in assert_one_line_error(size)
    assert "meta.json is damaged" in assert_one_line_error(meta)
    assert not any((tmp_path / f"o-{d}").exists() for d in ("bigid", "size", "meta"))


def test_vocabulary_mismatch_on_resume_and_bad_flags(tiny_run, tmp_path):
    (tmp_path / "other.txt").write_text("xyz ∑∂ " * 400, encoding="utf-8")
    p = run("prepare.py", f"--input={tmp_path / 'other.txt'}", "--dataset=other", f"--data_root={tmp_path / 'data'}")
    assert p.returncode == 0, p.stderr
    before = digest(tiny_run / "out")
    cases = [("train.py", TINY, f"--data_root={tmp_path / 'data'}", "--dataset=other", f"--out_dir={tiny_run / 'out'}",
              "--init_from=resume"),
             ("train.py", "--max_itters=3"), ("train.py", "--dataset=nothing"), ("train.py", "--dtype=float8")]
    # (every configurator error is tested in-process in test_configurator.py; one reaches it from the CLI here)
    expected = ["the checkpoint's tokenizer (char, ", "did you mean: max_iters", "no prepared data", "unknown dtype"]
    if not torch.cuda.is_available():
        cases.append(("train.py", "--device=cuda"))
        expected.append("cuda")
    for p, fragment in zip(run_many(cases, cwd=tmp_path), expected):
        assert fragment in assert_one_line_error(p), p.args
    assert digest(tiny_run / "out") == before
    # a corpus too short for the block: refused before out/ is created
    (tmp_path / "short.txt").write_text("hola mundo " * 5, encoding="utf-8")
    assert run("prepare.py", "--input=short.txt", "--dataset=short", cwd=tmp_path).returncode == 0
    line = assert_one_line_error(run("train.py", "--dataset=short", "--block_size=64", cwd=tmp_path))
    assert "too short" in line and not (tmp_path / "out").exists()
    # values out of range, and architecture options that do not exist: one line, no out_dir made
    data = f"--data_root={tiny_run / 'data'}"
    bad = [(("--batch_size=0",), "batch_size must be >= 1"), (("--eval_interval=0",), "eval_interval must be >= 1"),
           (("--gradient_accumulation_steps=0",), "gradient_accumulation_steps must be >= 1"),
           (("--learning_rate=-1",), "learning_rate must be > 0"), (("--beta2=1.5",), "beta1 and beta2"),
           (("--seed=100000000000000",), "seed must be"), (("--n_head=3",), "divisible by n_head"),
           (("--norm=rms_norm",), "norm must be 'layernorm' or 'rmsnorm'"), (("--dropout=1.5",), "dropout must be"),
           (("--pos=rope", "--n_embd=6", "--n_head=2"), "head size n_embd / n_head must be even")]
    for p, (flags, fragment) in zip(run_many([("train.py", TINY, data, "--dataset=tiny", "--out_dir=never", *flags)
                                              for flags, _ in bad], cwd=tmp_path), bad):
        assert fragment in assert_one_line_error(p), (flags, p.stderr)
    assert not (tmp_path / "never").exists()
    # a last.pt alone (a run killed between its two writes) is not replaced by a scratch run unasked
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "last.pt").write_bytes((tiny_run / "out" / "last.pt").read_bytes())
    p = run("train.py", TINY, data, "--dataset=tiny", "--out_dir=half", cwd=tmp_path)
    assert "half/last.pt already exists" in assert_one_line_error(p)


def test_resume_across_a_bpe_pattern_change_keeps_the_ids(tiny_run, tmp_path):
    """A BPE checkpoint whose stored pre-split pattern predates prepare.py's current one (the shipped
    backbone's case) resumes on data with the same merges, with a note; other merges are refused,
    and a weights-only checkpoint is named as such before any tokenizer check."""
    p = run("prepare.py", f"--input={tiny_run / 'corpus.txt'}", "--dataset=tb", "--tokenizer=bpe", "--vocab_size=300",
            f"--data_root={tmp_path / 'data'}")
    assert p.returncode == 0, p.stderr
    data = (TINY, f"--data_root={tmp_path / 'data'}", "--dataset=tb", "--max_iters=4", "--eval_interval=2")
    first = run("train.py", *data, "--out_dir=run", cwd=tmp_path)
    # (4 steps of a config whose schedule is 40: the run says its rate will not decay)
    assert first.returncode == 0 and "pass --lr_decay_iters=4 too" in first.stdout, first.stderr
    for f in ("ckpt.pt", "last.pt"):  # the pattern of an older prepare.py: the same merges and ids
        ck = torch.load(tmp_path / "run" / f, weights_only=True)
        assert ck["tokenizer"] == "bpe" and "{1,64}" in ck["pattern"]
        ck["pattern"] = ck["pattern"].replace("{1,64}", "+")
        torch.save(ck, tmp_path / "run" / f)
    ok = run("train.py", *data[:-2], "--max_iters=6", "--eval_interval=2", "--out_dir=run", "--init_from=resume",
             cwd=tmp_path)
    assert ok.returncode == 0 and "pre-split pattern differs" in ok.stdout, ok.stderr
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iter_num"] == 6
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ck["merges"][-1] = [ck["merges"][-1][1], ck["merges"][-1][0]]  # the same number of tokens, the last one another
    torch.save(ck, tmp_path / "run" / "last.pt")
    bad = run("train.py", *data, "--out_dir=run", "--init_from=resume", "--max_iters=8", cwd=tmp_path)
    assert "the same size, other tokens" in assert_one_line_error(bad)
    del ck["optimizer"]  # and weights only: that is what the user needs to hear first
    torch.save(ck, tmp_path / "run" / "last.pt")
    bad = run("train.py", *data, "--out_dir=run", "--init_from=resume", "--max_iters=8", cwd=tmp_path)
    assert "holds weights only" in assert_one_line_error(bad)


def test_compile_with_a_compiler_that_fails_is_one_line_and_keeps_the_checkpoint(tiny_run, tmp_path):
    """--compile=True where a C++ compiler exists but cannot build (Apple clang without OpenMP, here
    CXX=/bin/false): one line at the first step, and the checkpoint being resumed is left as it was."""
    for f in ("ckpt.pt", "last.pt", "log.jsonl"):
        (tmp_path / f).write_bytes((tiny_run / "out" / f).read_bytes())
    before = digest(tmp_path)
    p = run("train.py", TINY, f"--data_root={tiny_run / 'data'}", "--dataset=tiny", f"--out_dir={tmp_path}",
            "--init_from=resume", "--max_iters=50", "--compile=True", env={**os.environ, "CXX": "/bin/false"})
    assert "--compile=True failed in the first step" in assert_one_line_error(p)
    assert digest(tmp_path) == before


def test_export_weights_is_small_bf16_and_loads(tiny_run):
    """checkpoint.py --src --dst: the shipped-backbone format. Weights only, in bf16, loadable with
    weights_only=True by every script, predicting what the full checkpoint predicts (to bf16 precision)."""
    from checkpoint import load_checkpoint, model_from_checkpoint
    work = tiny_run
    p, bad = run_many([("checkpoint.py", "--src=out", "--dst=exported"), ("checkpoint.py", "--src=out")], cwd=work)
    assert p.returncode == 0 and "weights only, bfloat16" in p.stdout, p.stderr
    assert "usage" in assert_one_line_error(bad)
    full, small = load_checkpoint(str(work / "out")), load_checkpoint(str(work / "exported"))
    assert "optimizer" in full and "optimizer" not in small and small["vocab"] == full["vocab"]
    assert all(v.dtype == torch.bfloat16 for v in small["model"].values() if v.is_floating_point())
    assert os.path.getsize(work / "exported" / "ckpt.pt") < os.path.getsize(work / "out" / "ckpt.pt") / 3
    (a, tok), (b, _) = model_from_checkpoint(full), model_from_checkpoint(small)
    idx = torch.tensor([tok.encode("El perro es un canino")])
    with torch.no_grad():
        pa, pb = torch.softmax(a(idx)[0], -1), torch.softmax(b(idx)[0], -1)
    assert next(b.parameters()).dtype == torch.float32 and (pa - pb).abs().max() < 0.05
    # an export never replaces a checkpoint unasked (nor its own source), and cannot be resumed
    before = digest(work / "exported")
    again, same, resume = run_many([("checkpoint.py", "--src=out", "--dst=exported"),
                                    ("checkpoint.py", "--src=out", "--dst=out"),
                                    ("train.py", TINY, "--dataset=tiny", "--out_dir=exported", "--init_from=resume")],
                                   cwd=work)
    assert "already exists; use --overwrite=True" in assert_one_line_error(again)
    assert "--dst must differ from --src" in assert_one_line_error(same)
    assert "holds weights only" in assert_one_line_error(resume)
    assert digest(work / "exported") == before


def test_time_budget_runs_the_schedule_on_the_clock_and_stops_in_time(tiny_run):
    """config/pretrain_300s_cpu.py as shipped (its model, its schedule), with a 12-second budget on the tiny
    corpus: the run stops by itself inside the budget, its last line is the best val loss, and the learning
    rate has decayed to min_lr because the schedule follows the clock (by iterations it would have barely
    started: lr_decay_iters is set far beyond what 12 s can reach)."""
    import time
    budget = 12.0
    started = time.monotonic()
    p, = run_many([("train.py", os.path.join(ROOT, "config", "pretrain_300s_cpu.py"), "--dataset=tiny",
                    "--out_dir=budget", f"--time_budget={budget}", "--max_iters=1000000", "--lr_decay_iters=1000000",
                    "--log_interval=1", "--eval_interval=20", "--eval_iters=2",
                    "--compile=False")], cwd=tiny_run)  # (compiling alone would take ~20 s of the 12)
    wall = time.monotonic() - started
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1].startswith("done: best val loss"), lines[-3:]
    ck = torch.load(tiny_run / "budget" / "last.pt", weights_only=True)
    cfg, logs = ck["config"], [h for h in ck["history"] if "lr" in h]
    assert 0 < ck["iter_num"] < 1000000 and len(logs) >= 10  # stopped by the clock, not by max_iters
    assert cfg["ema"] > 0 and "train_weights" in ck  # it evaluates and saves the moving average of the weights
    # its stronger weight decay reaches the optimizer: the matrices decay at the config's rate, gains not at all
    assert cfg["weight_decay"] > 0.1 and sorted(g["weight_decay"] for g in ck["optimizer"][0]["param_groups"]) == [
        0.0, cfg["weight_decay"]]
    # decayed by the clock: the run stops a few seconds before the end of the budget (its last evaluation,
    # two steps and 2 s), near the bottom of the cosine; by iterations the rate would still be at its peak
    assert logs[-1]["lr"] < cfg["min_lr"] + 0.25 * (cfg["learning_rate"] - cfg["min_lr"])
    assert max(h["lr"] for h in logs) > 0.5 * cfg["learning_rate"]  # after warming up to the peak
    assert wall < budget + 10  # inside the budget, with room for the interpreter's start and exit on a busy machine
    bad, bad_ema = run_many([("train.py", TINY, "--dataset=tiny", "--out_dir=budget_bad", "--time_budget=-1"),
                             ("train.py", TINY, "--dataset=tiny", "--out_dir=budget_bad", "--ema=1.5")], cwd=tiny_run)
    assert "time_budget must be >= 0" in assert_one_line_error(bad)
    assert "ema must be >= 0 and < 1" in assert_one_line_error(bad_ema)
    assert not (tiny_run / "budget_bad").exists()


def test_300s_config_compiles_only_where_a_cpp_compiler_is(monkeypatch):
    """config/pretrain_300s_cpu.py turns torch.compile on by itself where it can run (on Linux), and off
    (eager, no error) where no C++ compiler is installed."""
    import configurator
    path = os.path.join(ROOT, "config", "pretrain_300s_cpu.py")
    monkeypatch.setenv("CXX", "/nowhere/g++")
    assert configurator.read_config_file(path)["compile"] is False
    monkeypatch.setenv("CXX", sys.executable)  # any program that exists stands in for the compiler
    assert configurator.read_config_file(path)["compile"] is (sys.platform == "linux")  # where it was measured
