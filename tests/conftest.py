"""Shared by every test file: the project root on sys.path, running a script as a user would, the
one-line-error check, file digests, and the tiny trained run that the train/sample/bench tests share."""
import hashlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TINY = os.path.join(ROOT, "config", "test_tiny.py")  # a 30k-parameter model that trains in seconds


def run(script, *args, cwd=None, input=None, timeout=240, **kw):
    """Run one of the kit's scripts as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, input=input, timeout=timeout, **kw)


def run_many(cases, cwd=None, jobs=2):
    """Run (script, *args) cases two at a time: these short runs are mostly start-up (importing
    torch), which overlaps well on 2 cores. Returns the CompletedProcesses in order."""
    out = []
    for i in range(0, len(cases), jobs):
        procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, c[0]), *c[1:]], cwd=cwd or ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
                 for c in cases[i:i + jobs]]
        for c, proc in zip(cases[i:i + jobs], procs):
            stdout, stderr = proc.communicate(timeout=240)
            out.append(subprocess.CompletedProcess(c, proc.returncode, stdout, stderr))
    return out


def assert_one_line_error(p):
    """A user error: non-zero exit, no traceback, one clear line on stderr."""
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def digest(folder):
    """sha256 of every file under folder: 'nothing on disk changed' means equal digests."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A work dir with a small prepared corpus (data/tiny) and a tiny pretrained model in out/
    (40 iterations of config/test_tiny.py). Tests may add out dirs beside it, never change out/."""
    work = tmp_path_factory.mktemp("work")
    text = "".join(f"El perro número {i} es un canino y el gato es un felino. " for i in range(300))
    (work / "corpus.txt").write_text(text, encoding="utf-8")
    p = run("prepare.py", "--input=corpus.txt", "--dataset=tiny", cwd=work)
    assert p.returncode == 0, p.stderr
    p = run("train.py", TINY, "--dataset=tiny", "--out_dir=out", cwd=work)
    assert p.returncode == 0, p.stderr
    return work
