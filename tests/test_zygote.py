"""The tests' fork server (tests/zygote.py, used by conftest.run): a script run through it behaves as
the same script run by a fresh `python`: arguments, folder, environment, stdin, both output streams,
exit codes (sys.exit with a number or a message, an uncaught exception, a signal), its own folder
first on sys.path, subprocesses of its own, and the timeout."""
import os
import signal
import subprocess
import sys

import pytest

import conftest

pytestmark = pytest.mark.skipif(not conftest.FORK, reason="the fork server is off (LLMFS_TEST_FORK=0, or not Linux)")
SCRIPT = r'''
import os, subprocess, sys
import helper  # from the script's own folder
print("argv", sys.argv[1:], "cwd", os.path.basename(os.getcwd()), "env", os.environ.get("ZYGOTE_TEST"))
print("stdin", sys.stdin.read().strip(), "helper", helper.VALUE, "é")
print("to stderr", file=sys.stderr)
child = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
print("child", child.returncode, child.stdout.strip())
mode = sys.argv[1]
if mode == "number":
    sys.exit(3)
if mode == "message":
    sys.exit("error: a message")
if mode == "raise":
    raise ValueError("boom")
if mode == "signal":
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGTERM)
if mode == "sleep":
    import time
    time.sleep(60)
'''


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    d = tmp_path_factory.mktemp("zyg")
    (d / "work").mkdir()
    (d / "helper.py").write_text("VALUE = 42\n")
    (d / "prog.py").write_text("import signal\n" + SCRIPT)
    return d


@pytest.mark.parametrize("mode", ["ok", "number", "message", "raise", "signal"])
def test_a_forked_run_is_a_fresh_run(script, mode):
    argv = [sys.executable, str(script / "prog.py"), mode]
    env = {**os.environ, "ZYGOTE_TEST": "yes"}
    cwd = str(script / "work")
    forked = conftest._forked_run(argv, cwd, env, "from stdin\n", 60, limit=None)
    plain = subprocess.run(argv, cwd=cwd, env=env, input="from stdin\n", capture_output=True, text=True, timeout=60)
    assert forked is not None
    assert (forked.returncode, forked.stdout) == (plain.returncode, plain.stdout), (forked, plain)
    assert forked.returncode == {"ok": 0, "number": 3, "message": 1, "raise": 1, "signal": -signal.SIGTERM}[mode]
    assert "helper 42 é" in forked.stdout and "child 0 42" in forked.stdout and "env yes" in forked.stdout
    assert "cwd work" in forked.stdout and f"argv ['{mode}']" in forked.stdout
    if mode == "raise":  # the same traceback: from the script's line on, not the fork server's frames
        assert forked.stderr == plain.stderr and "zygote" not in forked.stderr and "runpy" not in forked.stderr
    else:
        assert forked.stderr == plain.stderr


def test_a_forked_run_times_out_and_is_killed(script):
    argv = [sys.executable, str(script / "prog.py"), "sleep"]
    with pytest.raises(subprocess.TimeoutExpired):
        conftest._forked_run(argv, str(script), dict(os.environ), "", 1, limit=None)
    # the server still serves after a run it had to give up on
    assert conftest._forked_run([sys.executable, str(script / "prog.py"), "ok"], str(script), dict(os.environ),
                                "", 60, limit=None).returncode == 0
