"""bench.py modes on tiny inputs, and DDP: 2 CPU processes (gloo) match one process."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, assert_one_line_error, digest, run, run_many



def test_bench_sample_reports_cache_and_batch_and_identical_outputs(tiny_run):
    p = run("bench.py", "--mode=sample", "--out_dir=out", "--max_new_tokens=100", "--runs=2", cwd=tiny_run)
    assert p.returncode == 0, p.stderr
    assert "greedy outputs identical: True" in p.stdout
    # the figures are printed (their size is the benchmark's business, not a test's: the other pytest
    # worker shares the 2 cores): cache on and off at batch 1, and batch 8 (the default) compared to 1
    rows = {(r.split()[0], int(r.split()[1])): float(r.split()[2].replace(",", ""))
            for r in p.stdout.splitlines() if r.startswith(("on ", "off "))}
    assert set(rows) == {("on", 1), ("off", 1), ("on", 8)} and min(rows.values()) > 0, p.stdout
    assert float(p.stdout.split("(all rows together: ")[1].split("x")[0]) > 0
    assert float(p.stdout.split("speed-up ")[1].split("x")[0]) > 0
    # a prompt that fills the block (from the shipped corpus), runs alternating on/off
    p = run("bench.py", "--mode=sample", "--out_dir=out", "--max_new_tokens=50", "--runs=1", "--prompt_len=-1",
            cwd=tiny_run)
    assert p.returncode == 0 and "prompt of 32 tokens" in p.stdout and "identical: True" in p.stdout, p.stderr
    bad_len, bad_batch, long_len, runs, url = run_many([
        ("bench.py", "--mode=sample", "--out_dir=out", "--prompt_len=0"),
        ("bench.py", "--mode=sample", "--out_dir=out", "--batch=0"),
        ("bench.py", "--mode=sample", "--out_dir=out", "--prompt_len=33"),  # block_size is 32
        ("bench.py", "--mode=sample", "--out_dir=out", "--runs=0"),  # was a median of nothing
        ("bench.py", "--mode=serve", "--serve_url=notaurl")], cwd=tiny_run)
    assert "--prompt_len must be" in assert_one_line_error(bad_len)
    assert "--batch must be" in assert_one_line_error(bad_batch)
    assert "block size 32" in assert_one_line_error(long_len)
    assert "--runs must be an integer >= 1" in assert_one_line_error(runs)
    assert "--serve_url must look like" in assert_one_line_error(url)


def test_bench_train_reports_mfu(tmp_path):
    # a config that trains with the explicit attention in bf16 (as the CPU recipes do where bf16 is fast):
    # bench times that kernel in the config's precision, and train.py's default (fused) in another
    cfg = tmp_path / "explicit.py"
    cfg.write_text(open(TINY).read() + '\ndtype = "bfloat16"\nuse_sdpa = False\n')
    p, own, other, unused = run_many([("bench.py", "--mode=train", f"--config={TINY}", "--iters=3", "--dtype=auto"),
                                      ("bench.py", "--mode=train", f"--config={cfg}", "--iters=3", "--dtype=bfloat16"),
                                      ("bench.py", "--mode=train", f"--config={cfg}", "--iters=3", "--dtype=float32"),
                                      ("bench.py", "--mode=sample", "--dtype=bfloat16")])
    assert p.returncode == 0 and "float32 on cpu" in p.stdout, p.stderr  # auto, resolved (float32 on a CPU)
    assert "--dtype applies to --mode=train only" in assert_one_line_error(unused)
    assert "tokens/s" in p.stdout and "MFU" in p.stdout and "attention fused (sdpa)" in p.stdout
    assert own.returncode == 0 and "bfloat16 on cpu, attention explicit" in own.stdout, own.stderr
    assert other.returncode == 0 and "float32 on cpu, attention fused (sdpa)" in other.stdout, other.stderr


def test_bench_race_two_configs(tiny_run, tmp_path):
    fast = tmp_path / "fast.py"
    fast.write_text(open(TINY).read() + "\nlearning_rate = 1e-2\neval_train = False\n")
    p, short = run_many([("bench.py", "--mode=race", f"--a={TINY}", f"--b={fast}", "--dataset=tiny", "--target=3.0",
                          "--budget=60", f"--race_dir={tmp_path / 'race'}"),
                         ("bench.py", "--mode=race", f"--a={TINY}", f"--b={fast}", "--dataset=tiny", "--target=3.0",
                          "--budget=0.0005", f"--race_dir={tmp_path / 'short'}")], cwd=tiny_run)
    assert p.returncode == 0, p.stderr
    # a budget that ends before any evaluation does (half a millisecond; elapsed_s has 3 decimals): '-' in that
    # column, not a traceback
    assert short.returncode == 0 and all(r["best_val_within_budget"] is None
                                         for r in json.loads(short.stdout.strip().splitlines()[-1])), short.stderr
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    assert [r["config"] for r in rows] == [TINY, str(fast)]
    assert all(r["final_val"] > 0 for r in rows)
    # eval_train=False: the challenger's evaluations estimate the val loss only
    logs = {n: [json.loads(line) for line in open(tmp_path / "race" / n / "log.jsonl")] for n in "ab"}
    evals = {n: [r for r in log if "val_loss" in r] for n, log in logs.items()}
    assert all(r["train_loss"] > 0 for r in evals["a"]) and all(r["train_loss"] is None for r in evals["b"])
    assert "mode must be" in assert_one_line_error(run("bench.py", "--mode=fly"))


def test_ddp_averages_gradients_and_resumes_exactly(tiny_run):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    common = [TINY, "--dataset=tiny", "--gradient_accumulation_steps=2", "--max_iters=20", "--eval_interval=10"]
    # one thread per rank (2 ranks on 2 cores), and gloo on the loopback interface only
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}

    def ddp(*args):  # a torchrun, started (it runs beside the others: start-up dominates these tiny runs)
        return subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", os.path.join(ROOT, "train.py"),
                                 *common, *args], cwd=tiny_run, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finished(proc):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        assert "ranks in sync: max |weight difference| across 2 ranks = 0\n" in out, out[-500:]
        return out

    # one process, 2 micro-batches per step; and one that trains on only one of them: what a rank
    # that never all-reduces its gradients would do. Beside them: 2 ranks for 20 steps, and 2 ranks
    # interrupted at 10 (then resumed with 2 ranks again)
    full, part = ddp("--out_dir=ddp"), ddp("--out_dir=ddp_part", "--max_iters=10")
    one, half = run_many([("train.py", *common, "--out_dir=single"),
                          ("train.py", *common, "--gradient_accumulation_steps=1", "--out_dir=half")], cwd=tiny_run,
                         env=env)
    assert one.returncode == 0 and half.returncode == 0, one.stderr + half.stderr
    full_out = finished(full)
    finished(part)
    finished(ddp("--out_dir=ddp_part", "--init_from=resume"))
    w = {d: torch.load(tiny_run / d / "last.pt", weights_only=True) for d in ("single", "half", "ddp", "ddp_part")}

    def gap(a, b):
        return max((w[a]["model"][k] - w[b]["model"][k]).abs().max().item() for k in w[a]["model"])

    assert w["ddp"]["iter_num"] == w["ddp_part"]["iter_num"] == 20
    # each rank drew its own micro-batch (rank r = micro-batch r of the single process) and the
    # gradients were averaged: 2 ranks land where 1 process with both micro-batches lands. Ranks that
    # drew the same batches, or did not all-reduce, would be as far off as `half` is
    tol = 1e-4
    assert gap("ddp", "single") < tol, gap("ddp", "single")
    assert gap("half", "single") > 100 * tol, gap("half", "single")
    # the resumed 2-rank run continues exactly: same weights, same evaluations
    assert gap("ddp_part", "ddp") == 0.0
    assert [h for h in w["ddp_part"]["history"] if "val_loss" in h][-1]["val_loss"] == \
        [h for h in w["ddp"]["history"] if "val_loss" in h][-1]["val_loss"]
    # only rank 0 wrote: one log, and its progress lines are not doubled
    assert full_out.count("iter 20/20") == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the rank's process in /proc (Linux)")
def test_a_signal_to_one_rank_stops_every_rank_with_a_checkpoint(tiny_run):
    """A kill that reaches one rank only (rank 1 here; a Ctrl-C reaches all) stops every rank at the same
    step: rank 0 evaluates and saves, the ranks leave in sync. Before, rank 0 alone decided, so the
    run went on to max_iters and then reported a failure."""
    import signal
    import time
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", os.path.join(ROOT, "train.py"), TINY,
                             "--dataset=tiny", "--gradient_accumulation_steps=2", "--max_iters=100000",
                             "--lr_decay_iters=100000", "--out_dir=ddp_sig"], cwd=tiny_run, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("iter 30/"):
                break

        def rank_1():  # the worker torchrun started with RANK=1
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        ppid = next(int(x.split()[1]) for x in f if x.startswith("PPid:"))
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        environ = f.read().split(b"\0")
                except (OSError, StopIteration):
                    continue
                if ppid == proc.pid and b"RANK=1" in environ:
                    return int(pid)
        pid = rank_1()
        assert pid, "rank 1 not found"
        t = time.time()
        os.kill(pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert time.time() - t < 60
    ck = torch.load(tiny_run / "ddp_sig" / "last.pt", weights_only=True)
    assert 30 <= ck["iter_num"] < 1000 and ck["history"][-1]["iter"] == ck["iter_num"], ck["iter_num"]
    assert f"eval {ck['iter_num']}:" in out and "ranks in sync" in out, out[-800:] + err[-800:]


def test_bench_prepare_curve_and_resplit(tiny_run, tmp_path):
    """bench.py --mode=prepare on a small generated folder (all four file kinds, two encodings),
    --mode=curve with one seed and all labels, and --mode=resplit with two poolings and two re-splits:
    each runs end to end and reports what it promises."""
    cfg = tmp_path / "cls_fast.py"
    cfg.write_text(f"data = {os.path.join(ROOT, 'data', 'es', 'sentiment')!r}\npool = 'mean'\nfreeze = 'last_n'\n"
                   "max_iters = 10\neval_interval = 5\nbatch_size = 16\n", encoding="utf-8")
    back = f"--backbone={tiny_run / 'out'}"
    prep, curve, resplit, own, bad_n, bad_pool = run_many([
        ("bench.py", "--mode=prepare", "--prepare_mb=20"),
        ("bench.py", "--mode=curve", back, f"--cls_config={cfg}", "--curve_labels=0", "--seeds=1",
         "--curve_svg=curve.svg"),
        ("bench.py", "--mode=resplit", back, f"--cls_config={cfg}", "--pools=mean,layers+max", "--resplits=2",
         "--scratch=True"),
        ("bench.py", "--mode=resplit", back, "--resplits=0"),
        ("bench.py", "--mode=resplit", back, "--resplits=-1"),
        ("bench.py", "--mode=resplit", back, "--pools=layers,max")], cwd=tmp_path)
    assert resplit.returncode == 0, resplit.stderr
    rows = [r for r in resplit.stdout.splitlines() if r.startswith("| probe, ") or r.startswith("| TF-IDF")]
    assert [r.split(" | ")[0] for r in rows] == ["| probe, mean", "| probe, layers+max", "| TF-IDF + logreg"]
    assert all(r.count("|") == 5 and "2 re-splits" in resplit.stdout for r in rows), resplit.stdout
    # the own split is the shipped train/test split: TF-IDF scores there exactly what finetune_cls.py prints
    assert rows[2].startswith("| TF-IDF + logreg | 0.772 |") and "re-split 2 " in resplit.stdout, resplit.stdout
    assert "(random weights)" in resplit.stdout and "(random weights)" not in own.stdout, own.stderr
    # --resplits=0: the shipped split alone, with the config's own pooling (config/finetune_cls.py: layers+max)
    probe_rows = [r for r in own.stdout.splitlines() if r.startswith("| probe")]
    assert len(probe_rows) == 1 and probe_rows[0].startswith("| probe, layers+max | 0."), own.stdout
    assert probe_rows[0].split(" | ")[2] == "-", own.stdout
    assert "--resplits must be 0" in assert_one_line_error(bad_n)
    assert "--pools: each must be one of" in assert_one_line_error(bad_pool)
    assert prep.returncode == 0, prep.stderr
    kinds = {name.split(".", 1)[1] for name in os.listdir(tmp_path / "bench-prepare")}
    assert kinds == {"txt", "jsonl.gz", "parquet"}
    assert "peak RSS" in prep.stdout and "cp1252" in prep.stdout and "utf-8" in prep.stdout
    assert curve.returncode == 0, curve.stderr
    row = [line for line in curve.stdout.splitlines() if line.startswith("| all |")]
    assert len(row) == 1 and row[0].count("|") == 6, curve.stdout
    svg = (tmp_path / "curve.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and svg.count("<polyline") == 3 and "TF-IDF" in svg


def test_bench_race_against_real_nanogpt(tmp_path):
    """--nanogpt: the unmodified nanoGPT in ../shared/ref/nanogpt runs from a temporary copy on the
    same text as ours; its last val loss is the target. A short run (60 iterations: nanoGPT evaluates
    at step 0 only) checks the plumbing: both prepare, both trainers' evaluations are read as they
    print, the table and ratio come out, and the reference folder is left as it was."""
    ref = os.path.join(ROOT, "..", "shared", "ref", "nanogpt")
    if not os.path.isfile(os.path.join(ref, "train.py")):
        # CI lays shared/ beside the clone: there a missing folder is a failure, not a skip
        assert not os.environ.get("CI"), f"{ref} is missing in CI"
        pytest.skip("nanoGPT reference not present beside this clone (../shared/ref/nanogpt)")
    text = tmp_path / "text.txt"
    text.write_text("".join(f"Verso {i}: el perro ladra y el gato duerme al sol.\n" for i in range(600)), encoding="utf-8")
    before = digest(ref)
    p = run("bench.py", "--mode=race", f"--nanogpt={ref}", f"--race_text={text}", "--nanogpt_iters=60",
            f"--a={TINY}", f"--b={TINY}", "--budget=60", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    assert [r["run"] for r in rows] == ["nanoGPT (real)", f"ours: {TINY}", f"reproduction: {TINY}"], rows
    real, ours, repro = rows
    assert real["final_iter"] == 0 and real["time_to_target_s"] > 0  # step 0 is nanoGPT's one evaluation here
    assert ours["final_val"] <= real["final_val"] and ours["time_to_target_s"] > 0  # reached: it stops there
    assert repro["final_iter"] == 60 and "ratio (real nanoGPT / ours)" in p.stdout
    assert "reproduction vs real" in p.stdout
    assert digest(ref) == before and os.listdir(tmp_path / "out-race") == []  # the temporary copy is gone
    assert "is not a nanoGPT checkout" in assert_one_line_error(
        run("bench.py", "--mode=race", f"--nanogpt={tmp_path}", cwd=tmp_path))
