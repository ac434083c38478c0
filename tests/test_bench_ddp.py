"""bench.py modes on tiny inputs, and DDP: 2 CPU processes (gloo) match one process."""
import json
import os
import shutil
import subprocess
import sys

import torch

from conftest import ROOT, assert_one_line_error, run

TINY = os.path.join(ROOT, "config", "test_tiny.py")


def test_bench_sample_cache_faster_and_identical(tiny_run):
    p = run("bench.py", "--mode=sample", "--out_dir=out", "--max_new_tokens=100", "--runs=2", cwd=tiny_run)
    assert p.returncode == 0, p.stderr
    assert "greedy outputs identical: True" in p.stdout
    speedup = float(p.stdout.split("speed-up ")[1].split("x")[0])
    assert speedup > 1.0  # 100 tokens with block_size 32: the cache must already pay off
    # a prompt that fills the block (from the shipped corpus), runs alternating on/off
    p = run("bench.py", "--mode=sample", "--out_dir=out", "--max_new_tokens=50", "--runs=1", "--prompt_len=-1",
            cwd=tiny_run)
    assert p.returncode == 0 and "prompt of 32 tokens" in p.stdout and "identical: True" in p.stdout, p.stderr
    assert "--prompt_len must be" in assert_one_line_error(
        run("bench.py", "--mode=sample", "--out_dir=out", "--prompt_len=0", cwd=tiny_run))


def test_bench_train_reports_mfu():
    p = run("bench.py", "--mode=train", f"--config={TINY}", "--iters=3")
    assert p.returncode == 0, p.stderr
    assert "tokens/s" in p.stdout and "MFU" in p.stdout


def test_bench_race_two_configs(tiny_run, tmp_path):
    fast = tmp_path / "fast.py"
    fast.write_text(open(TINY).read() + "\nlearning_rate = 1e-2\neval_train = False\n")
    p = run("bench.py", "--mode=race", f"--a={TINY}", f"--b={fast}", "--dataset=tiny", "--target=3.0",
            "--budget=60", f"--race_dir={tmp_path / 'race'}", cwd=tiny_run)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    assert [r["config"] for r in rows] == [TINY, str(fast)]
    assert all(r["final_val"] > 0 for r in rows)
    # eval_train=False: the challenger's evaluations estimate the val loss only
    logs = {n: [json.loads(line) for line in open(tmp_path / "race" / n / "log.jsonl")] for n in "ab"}
    evals = {n: [r for r in log if "val_loss" in r] for n, log in logs.items()}
    assert all(r["train_loss"] > 0 for r in evals["a"]) and all(r["train_loss"] is None for r in evals["b"])
    assert "mode must be" in assert_one_line_error(run("bench.py", "--mode=fly"))


def test_ddp_two_processes_match_single_process(tiny_run):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    common = [os.path.join(ROOT, "train.py"), TINY, "--dataset=tiny", "--gradient_accumulation_steps=2",
              "--max_iters=40", "--eval_interval=20"]
    single = subprocess.run([sys.executable, *common, "--out_dir=single"], cwd=tiny_run, capture_output=True,
                            text=True, timeout=240)
    assert single.returncode == 0, single.stderr
    # one thread per rank (2 ranks on 2 cores), and gloo on the loopback interface only
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", *common, "--out_dir=ddp"],
                         cwd=tiny_run, capture_output=True, text=True, timeout=240, env=env)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a = torch.load(tiny_run / "single" / "last.pt", weights_only=True)
    b = torch.load(tiny_run / "ddp" / "last.pt", weights_only=True)
    assert a["iter_num"] == b["iter_num"] == 40
    va = [h["val_loss"] for h in a["history"] if "val_loss" in h]
    vb = [h["val_loss"] for h in b["history"] if "val_loss" in h]
    # same global batch (2 x 8 sequences per step), different random batches: close, not equal
    assert abs(va[-1] - vb[-1]) < 0.15, (va, vb)
    assert vb[-1] < vb[0] or len(vb) == 1
    # only rank 0 wrote: one log, and its progress lines are not doubled
    assert ddp.stdout.count("iter 40/40") == 1
