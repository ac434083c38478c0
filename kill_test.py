"""
Crash test for training: start train.py, SIGKILL it at chosen moments, resume, repeat.

    python kill_test.py                       # 20 kills of a tiny run (about 1-2 minutes on 2 cores)
    python kill_test.py --kills=3 --max_iters=120

The kills are aimed, from what the run prints: half land during training steps (a random number
of steps after the latest checkpoint), half after an "eval" line, the moment a checkpoint's
.tmp file appears, while last.pt / ckpt.pt are being written. Each kill is classified afterwards from what is on disk: a *.tmp file left
behind proves the kill interrupted a checkpoint write. At the end it checks that every
checkpoint loads, that the run reached max_iters, that no kill lost more than one checkpoint
interval of work, and that the resumed run's final weights and losses equal an uninterrupted
run's exactly. Everything happens in a temporary folder; the project's files are not touched.
"""
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from configurator import configure, fail

# -----------------------------------------------------------------------------
kills = 20
max_iters = 2000
eval_interval = 20  # the checkpoint interval: the most work a kill may lose
seed = 0
keep = False  # keep the temporary folder for inspection
# -----------------------------------------------------------------------------
configure(globals())
HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(seed)
work = tempfile.mkdtemp(prefix="killtest-")
corpus = "".join(f"Línea {i}: el perro es un canino, el gato es un felino.\n" for i in range(800))
with open(os.path.join(work, "corpus.txt"), "w", encoding="utf-8") as f:
    f.write(corpus)


def run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=work, capture_output=True, text=True, **kw)


def train_cmd(out_dir, init_from):
    return [os.path.join(HERE, "train.py"), os.path.join(HERE, "config", "test_tiny.py"), "--dataset=kill",
            f"--out_dir={out_dir}", f"--init_from={init_from}", f"--max_iters={max_iters}",
            f"--lr_decay_iters={max_iters}", f"--eval_interval={eval_interval}", "--log_interval=1"]


p = run([os.path.join(HERE, "prepare.py"), "--input=corpus.txt", "--dataset=kill"])
if p.returncode:
    fail(p.stderr.strip())
ref = run(train_cmd("ref", "scratch"))  # the uninterrupted reference run
if ref.returncode:
    fail(ref.stderr.strip())

import torch  # noqa: E402  (only needed from here on)



def progress():
    """(the last iteration logged, the iteration of the last checkpoint) of the killed run"""
    reached = 0
    if os.path.exists(os.path.join(work, "run", "log.jsonl")):
        with open(os.path.join(work, "run", "log.jsonl")) as f:
            for line in f:
                try:
                    reached = max(reached, json.loads(line)["iter"])
                except (ValueError, KeyError):
                    pass  # a line cut by the kill
    path = os.path.join(work, "run", "last.pt")
    return reached, torch.load(path, weights_only=True)["iter_num"] if os.path.exists(path) else 0


def started():
    return any(os.path.exists(os.path.join(work, "run", n)) for n in ("last.pt", "ckpt.pt"))


def kill_once(aim):
    """Start (or resume) the run and SIGKILL it: aim='train' a few steps into training after a
    checkpoint exists, aim='write' just after an eval line, while the checkpoint is written.
    Returns the phase the kill landed in ('write', 'train', 'startup') or None if the run finished."""
    proc = subprocess.Popen([sys.executable, *train_cmd("run", "resume" if started() else "scratch")], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    steps_to_wait = rng.randint(1, eval_interval - 1)
    for line in proc.stdout:
        if line.startswith("iter ") and started():
            steps_to_wait -= 1
            if aim == "train" and steps_to_wait <= 0:
                break
        if line.startswith("eval ") and aim == "write":
            # the checkpoint is written right after this line: watch for its .tmp and kill the moment
            # it appears (the file lives from open() to the rename, fsync included)
            deadline = time.time() + 5
            while not glob.glob(os.path.join(work, "run", "*.tmp")) and time.time() < deadline:
                pass
            break
    else:
        proc.wait()
        return None  # it finished before the kill came
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    if glob.glob(os.path.join(work, "run", "*.tmp")):
        return "write"  # a half-written file: the kill landed inside a checkpoint or log write
    return "train" if started() else "startup"  # after the first checkpoint: in the training loop


lost, phases = [], []
while len(phases) < kills and progress()[1] < max_iters:
    # alternate the aims, but aim at a write until one has landed inside one
    phase = kill_once("write" if len(phases) % 2 or "write" not in phases else "train")
    if phase is None:
        break
    phases.append(phase)
    reached, saved = progress()
    lost.append(max(0, reached - saved))
    print(f"kill {len(phases):2d} ({phase:7s}): at iteration {reached}, last checkpoint {saved}, "
          f"lost {lost[-1]} iterations", flush=True)

final = run(train_cmd("run", "resume" if started() else "scratch"))
if final.returncode:
    fail(f"the final resume failed: {final.stderr.strip()}")

checked = 0
for name in ("ckpt.pt", "last.pt"):
    ck = torch.load(os.path.join(work, "run", name), weights_only=True)
    assert ck["kind"] == "pretrain" and "model" in ck
    checked += 1
last = torch.load(os.path.join(work, "run", "last.pt"), weights_only=True)
ref_last = torch.load(os.path.join(work, "ref", "last.pt"), weights_only=True)
evals = [(h["iter"], h["val_loss"]) for h in last["history"] if "val_loss" in h]
ref_evals = [(h["iter"], h["val_loss"]) for h in ref_last["history"] if "val_loss" in h]
same_weights = all(torch.equal(last["model"][k], ref_last["model"][k]) for k in ref_last["model"])
report = {"kills": len(phases), "kills_during_training": phases.count("train"),
          "kills_during_write": phases.count("write"), "kills_during_startup": phases.count("startup"),
          "checkpoints_verified": checked, "tmp_files_left": len(glob.glob(os.path.join(work, "run", "*.tmp"))),
          "finished_at": last["iter_num"],
          "max_lost_iterations": max(lost, default=0), "checkpoint_interval": eval_interval,
          "same_final_weights_as_uninterrupted": same_weights, "same_val_losses": evals == ref_evals}
print(json.dumps(report))
if not keep:
    shutil.rmtree(work, ignore_errors=True)
ok = (last["iter_num"] == max_iters and not report["tmp_files_left"] and max(lost, default=0) <= eval_interval
      and same_weights and evals == ref_evals)
if not ok:
    fail("kill test failed: " + json.dumps(report))
print("kill test passed")
