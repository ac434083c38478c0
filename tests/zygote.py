"""A fork server for the tests: run the kit's scripts without paying for `import torch` each time.

Most tests run a script as a user would (conftest.run): a new Python process, ~2 s of which go to
importing torch before the script does anything (a bad-input run is over in 0.1 s after that). This
server imports torch and numpy once; then, for each request, it forks a copy of itself that becomes
`python script.py args...`: argv, working directory, environment, stdin/stdout/stderr files, and the
script's folder first on sys.path, run as __main__ with runpy. The script's own code runs unchanged;
only the interpreter's start-up is shared. conftest starts one server per environment and falls back
to a real subprocess for anything else (other Popen options); LLMFS_TEST_FORK=0 turns it off.

    python tests/zygote.py SOCKET_PATH     # serves until its stdin closes (the pytest worker is gone)

Protocol, one connection per run: the client sends one JSON line {argv, cwd, env, stdin, stdout, stderr}
(the three streams are file paths); the server answers "pid N" when the script starts and "exit N" with
its return code when it ends (negative: killed by that signal, as subprocess reports it).
"""
import atexit
import io
import json
import os
import runpy
import select
import signal
import socket
import sys
import traceback

import numpy  # noqa: F401  (imported once here, so that no script pays for it)
import torch  # noqa: F401


def run_script(req):
    """In the forked child: become `python argv[0] argv[1:]` and never return."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # scripts wait for their own subprocesses
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for fd, (path, mode) in enumerate(((req["stdin"], os.O_RDONLY), (req["stdout"], os.O_WRONLY),
                                       (req["stderr"], os.O_WRONLY))):
        f = os.open(path, mode)
        os.dup2(f, fd)
        os.close(f)
    # fresh text streams on the new file descriptors, as the interpreter makes them: stderr line-buffered,
    # both unbuffered under PYTHONUNBUFFERED
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = sys.__stdin__ = open(0, "r", encoding="utf-8", closefd=False)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(open(1, "wb", buffering=0 if unbuffered else -1, closefd=False),
                                                   encoding="utf-8", write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), encoding="utf-8",
                                                   errors="backslashreplace", line_buffering=True,
                                                   write_through=unbuffered)
    script = os.path.abspath(req["argv"][0])
    sys.argv = list(req["argv"])
    sys.path[0] = os.path.dirname(script)  # `python script.py` puts its folder first
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:  # sys.exit(n), sys.exit("message") and sys.exit() mean what they mean to Python
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:  # an uncaught exception: the traceback on stderr and exit status 1
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:  # from the script's frame on,
            tb = tb.tb_next  # as Python prints it (not runpy's frames above it)
        traceback.print_exception(type(e), e, tb or e.__traceback__)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)


def handle(conn, req):
    """In a forked waiter: fork the script, report its pid, wait for it, report its exit status."""
    pid = os.fork()
    if pid == 0:
        conn.close()
        run_script(req)
    try:
        conn.sendall(f"pid {pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
    except OSError:  # the client gave up (a timeout): it kills the script itself
        pass
    os._exit(0)


def read_line(conn):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


def main(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    server.listen(16)
    os.rename(path + ".tmp", path)  # the path appears only once it accepts: conftest waits for it
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the waiters
    while True:
        ready, _, _ = select.select([server, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1024):
            break  # the pytest worker that started us is gone
        if server in ready:
            conn, _ = server.accept()
            try:
                req = json.loads(read_line(conn))
            except ValueError:  # a client that went away before asking
                conn.close()
                continue
            if os.fork() == 0:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # so that waitpid sees the script end
                handle(conn, req)
            conn.close()
    os.unlink(path)
    os.rmdir(os.path.dirname(path))  # conftest made this folder for the socket


if __name__ == "__main__":
    main(sys.argv[1])
