import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run(script, *args, cwd=None, input=None, timeout=240):
    """Run one of the kit's scripts as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, input=input, timeout=timeout)


def assert_one_line_error(p):
    """A user error: non-zero exit, no traceback, one clear line on stderr."""
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A work dir with a small prepared corpus and a tiny pretrained model in out/."""
    work = tmp_path_factory.mktemp("work")
    text = "".join(f"El perro número {i} es un canino y el gato es un felino. " for i in range(300))
    (work / "corpus.txt").write_text(text, encoding="utf-8")
    p = run("prepare.py", "--input=corpus.txt", "--dataset=tiny", cwd=work)
    assert p.returncode == 0, p.stderr
    p = run("train.py", os.path.join(ROOT, "config", "test_tiny.py"), "--dataset=tiny", "--out_dir=out", cwd=work)
    assert p.returncode == 0, p.stderr
    return work
