"""
The tiny configurator (nanoGPT's idiom, made safe).

Every script defines its settings as plain globals at the top, then calls

    config = configure(globals())

which reads sys.argv:
    python train.py config/pretrain_char.py --batch_size=32 --device=cpu
positional arguments are Python config files that assign some of those globals;
--key=value overrides one global. Values are parsed with ast.literal_eval (never
eval), falling back to a plain string, so `--out_dir=out-x` needs no quotes.

Rules: unknown keys fail and name the closest known keys; types must match the
default (an int where a float is expected is fine, bools accept True/False/true/false,
a default of None accepts anything). Every error is one line on stderr, exit code 2.

This file also holds the small CLI helpers every script shares: fail() (one clear line, exit),
jsonl_objects() and catch_stop_signals(); and configure() makes output piped into a reader that stops
early (`python sample.py | head -3`) end the script quietly, as it ends a Unix tool, not in a traceback.
"""
import ast
import difflib
import json
import numbers
import os
import signal
import sys
import types

_SIMPLE = (bool, int, float, str, tuple, list, dict, type(None))
# the keys the last configure() call set from config files or flags, each with where it came from: the
# config file's path, or "--key=value" (train.py's resume checks them against the checkpoint: a setting
# the user asked for must not be silently ignored, and the message names where it was asked for)
given = {}


def _quiet_broken_pipe(kind, value, tb):
    """sys.excepthook: a BrokenPipeError (the reader of stdout, say `head`, has exited) ends the script with
    exit code 1 and no traceback; stdout goes to /dev/null so that Python's last flush at exit cannot fail
    again. Every other error is reported as usual. (Not SIGPIPE's default action: a server must survive a
    client that hangs up.)"""
    if not issubclass(kind, BrokenPipeError):
        return sys.__excepthook__(kind, value, tb)
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (a notebook, a test runner's capture)
        pass


def fail(msg, code=1):
    """Print one clear line on stderr and exit non-zero (no traceback). Under torchrun every rank says it:
    the others name themselves, and each line is one write, so two ranks' lines never run together."""
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    sys.stderr.write(f"{'' if rank == '0' else f'[rank {rank}] '}error: {msg}\n")
    sys.stderr.flush()
    sys.exit(code)


def json_lines(lines):
    """(line number, object) for each non-empty line of JSONL: a text, or lines as they stream in. The
    object is None where the line is not valid JSON (a 5,000-digit number and [[[[...]]]] included:
    Python's parser raises ValueError and RecursionError for those). The kit's one JSONL reader: each
    caller says in its own words what a bad line means."""
    for n, line in enumerate(lines.splitlines() if isinstance(lines, str) else lines, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except (ValueError, RecursionError):
                yield n, None


def jsonl_objects(path, text):
    """json_lines for a script: invalid JSON stops the run in one line."""
    for n, obj in json_lines(text):
        if obj is None:
            fail(f"{path} line {n}: not valid JSON")
        yield n, obj


def catch_stop_signals():
    """Ctrl-C (SIGINT) and kill (SIGTERM) set stop["signal"] instead of ending the process, so a
    training loop can finish its step, save and exit cleanly (stop_exit_code() gives 130 or 143)."""
    stop = {"signal": None}

    def handler(signum, frame):
        stop["signal"] = signum

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def stop_exit_code(stop):
    return 130 if stop["signal"] == signal.SIGINT else 143


def _coerce(key, value, default):
    """Check/convert value against the type of the default. Returns the value or fails."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        fail(f"--{key} expects a bool (True/False), got {value!r}", 2)
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail(f"--{key} expects a float, got {value!r}", 2)
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail(f"--{key} expects an int, got {value!r}", 2)
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        fail(f"{key} expects a string, got {value!r}", 2)
    if type(value) is not type(default):
        fail(f"--{key} expects a {type(default).__name__}, got {value!r}", 2)
    return value


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    fail(f"unknown config key '{key}'{hint}", 2)


def read_config_file(path):
    """A config file is plain Python; returns the simple values it assigns."""
    if not os.path.isfile(path):
        fail(f"config file not found: {path}", 2)
    scope = {}
    try:
        with open(path, encoding="utf-8") as f:
            exec(compile(f.read(), path, "exec"), scope)  # config files are code the user wrote
    except (Exception, SystemExit) as e:  # a broken config file is a user error, not a crash (nor a silent exit)
        fail(f"could not run config file {path}: {type(e).__name__}: {e}", 2)
    values = {}
    for k, v in scope.items():
        if k.startswith("_") or isinstance(v, types.ModuleType) or callable(v):
            continue  # __builtins__, imports and helpers (functions, classes)
        if isinstance(v, os.PathLike):  # out_dir = Path("runs") / "a": the path it names
            v = os.fspath(v)
        elif isinstance(v, numbers.Number) and not isinstance(v, _SIMPLE):  # numpy.int64(20), numpy.float32(...)
            v = int(v) if isinstance(v, numbers.Integral) else float(v)
        if not isinstance(v, _SIMPLE):
            fail(f"config file {path} sets {k} to a {type(v).__name__}; use a number, string, bool or list", 2)
        values[k] = v
    return values


def configure(g, argv=None, torchrun=False):
    """Apply config files and --key=value flags from argv to the dict g (a script's globals()).
    Only a script that says torchrun=True (train.py) may run as several processes: every other one
    would run whole in each of them, writing the same files."""
    if argv is None and not torchrun and os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1"):
        fail(f"{os.path.basename(sys.argv[0])} runs as one process: start it with python, not torchrun "
             f"(train.py is the script that trains on several)")
    if argv is None:  # a script's own command line (a test's call passes argv, and keeps its hook)
        sys.excepthook = _quiet_broken_pipe
    argv = sys.argv[1:] if argv is None else argv
    known = [k for k, v in g.items() if not k.startswith("_") and isinstance(v, _SIMPLE)]
    given.clear()
    for arg in argv:
        if not arg.startswith("--"):
            for key, value in read_config_file(arg).items():
                if key not in known:
                    _unknown(key, known)
                g[key] = _coerce(key, value, g[key])
                given[key] = arg
        else:
            if "=" not in arg:
                fail(f"flags look like --key=value, got '{arg}'", 2)
            key, raw = arg[2:].split("=", 1)
            if key not in known:
                _unknown(key, known)
            try:
                value = ast.literal_eval(raw)  # numbers, bools, tuples... never code
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                value = raw  # anything else is a string
            if isinstance(g[key], str) and not isinstance(value, str):
                value = raw  # text settings keep exactly what was typed: --start=[1, 2]
            g[key] = _coerce(key, value, g[key])
            given[key] = arg
    return {k: g[k] for k in known}
