"""Shared by every test file: the project root on sys.path, running a script as a user would, the
one-line-error check, file digests, the tiny trained run that the train/sample/bench tests share,
and the tiny instruction checkpoints (out_root) plus the Streamlit server that the app, browser and
docker tests share."""
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TINY = os.path.join(ROOT, "config", "test_tiny.py")  # a 30k-parameter model that trains in seconds

import torch  # noqa: E402

from checkpoint import save_checkpoint  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import BASE_CHARS  # noqa: E402


# LLMFS_TEST_FORK=0: every run is a plain subprocess. Off by default outside Linux: macOS frameworks that
# torch loads are not safe to fork (the reason Python's multiprocessing spawns there)
FORK = os.environ.get("LLMFS_TEST_FORK", "1" if sys.platform.startswith("linux") else "0") != "0"
_ZYGOTES = {}  # one fork server (tests/zygote.py) per environment, for this pytest process
_ZYGOTES_LOCK = threading.Lock()  # run_many asks from two threads at once


def _zygote(env, limit=3):
    """The socket path of a fork server started with env (on first use), or None past `limit` of them
    (None: no limit, for test_zygote.py, whose environment may be this worker's fourth)."""
    env = {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}  # pytest changes it every test
    key = json.dumps(env, sort_keys=True)
    with _ZYGOTES_LOCK:
        if key not in _ZYGOTES:
            # a test with an environment of its own: a plain subprocess is fine
            if limit is not None and len(_ZYGOTES) >= limit:
                return None
            path = os.path.join(tempfile.mkdtemp(prefix="zygote-"), "socket")
            proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "zygote.py"), path], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            deadline = time.time() + 60
            while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)  # it binds the socket once torch is imported
            # one that did not start (its error is on stderr) leaves plain subprocesses to run the scripts;
            # test_zygote.py fails then. Its stdin stays open: it exits when this process does
            _ZYGOTES[key] = path if os.path.exists(path) else None, proc
        return _ZYGOTES[key][0]


def _forked_run(argv, cwd, env, input, timeout, limit=3):
    """subprocess.run(argv, capture_output=True, text=True) through the fork server: the same
    CompletedProcess, minus the ~2 s of importing torch. None if there is no server for env."""
    path = _zygote(env, limit)
    if path is None:
        return None
    with tempfile.TemporaryDirectory(prefix="run-") as tmp:
        files = {name: os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")}
        with open(files["stdin"], "w", encoding="utf-8") as f:
            f.write(input or "")
        open(files["stdout"], "w").close()
        open(files["stderr"], "w").close()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            conn.settimeout(timeout)
            conn.sendall((json.dumps({"argv": argv[1:], "cwd": cwd, "env": env, **files}) + "\n").encode())
            reply, pid = b"", None
            try:
                while reply.count(b"\n") < 2:
                    chunk = conn.recv(1024)
                    if not chunk:
                        raise RuntimeError(f"the tests' fork server lost the run of {argv[1:]}")
                    reply += chunk
                    if pid is None and b"\n" in reply:
                        pid = int(reply.split()[1])
            except socket.timeout:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(argv, timeout)
        code = int(reply.split()[3])
        with open(files["stdout"], encoding="utf-8") as f, open(files["stderr"], encoding="utf-8") as g:
            return subprocess.CompletedProcess(argv, code, f.read(), g.read())


def run(script, *args, cwd=None, input=None, timeout=240, **kw):
    """Run one of the kit's scripts as a user would; returns the CompletedProcess. Through the fork
    server when nothing but env is asked for (tests/zygote.py: the script is the same, the start-up is
    shared), otherwise (preexec_fn, ...) as a plain subprocess."""
    argv = [sys.executable, os.path.join(ROOT, script), *args]
    if FORK and set(kw) <= {"env"}:
        env = dict(kw.get("env") or os.environ)
        p = _forked_run([os.fspath(a) for a in argv], os.fspath(cwd or ROOT), env, input, timeout)
        if p is not None:
            return p
    return subprocess.run(argv, cwd=cwd or ROOT, capture_output=True, text=True, input=input, timeout=timeout, **kw)


def interrupt_while_training(script, *args, cwd, sig, after="iter 5/"):
    """Start a training script, send it sig once it prints a line starting with `after` (it is training),
    and return (exit code, stdout after that line, stderr)."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith(after):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def run_many(cases, cwd=None, jobs=2, env=None):
    """Run (script, *args) cases two at a time, one on each of 2 cores. One thread each: two 2-thread
    torch processes on 2 cores spin against each other and run several times slower. Returns the
    CompletedProcesses in order."""
    env = env or {**os.environ, "OMP_NUM_THREADS": "1"}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda c: run(c[0], *c[1:], cwd=cwd, env=env), cases))


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


# -------------------------------------------------------------------- app, browser, docker
INSTR_DIR = os.path.join(ROOT, "data", "es", "instructions")
_BUILT = {}


def instruction_rows(split="test"):
    with open(os.path.join(INSTR_DIR, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_tiny_checkpoints(root, steps=150, seed=0, block_size=128):
    """root/out-instr (trained a little on the three facts), root/out-instr-b (untrained) and
    root/out-pre (a 'pretrain' checkpoint the app must not list). Memoized per root."""
    if root in _BUILT:
        return _BUILT[root]
    from tokenizer import CharTokenizer

    texts = [BASE_CHARS]
    for split in ("train", "test"):
        for r in instruction_rows(split):
            texts += [r["prompt"], r["response"]]
    tok = CharTokenizer.from_texts(texts)
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=len(tok), block_size=block_size, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg)
    facts = {}
    for r in instruction_rows("train"):  # the shortest prompt of each kind (fits block_size 128)
        if r["kind"] not in facts or len(r["prompt"]) < len(facts[r["kind"]]["prompt"]):
            facts[r["kind"]] = r
    seqs = [tok.encode_instruction(r["prompt"], r["response"])[0] for k, r in sorted(facts.items())]
    T = max(len(s) for s in seqs)
    x = torch.full((len(seqs), T), tok.pad_id)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s)
    y = torch.full_like(x, -100)
    y[:, :-1] = x[:, 1:]
    y[y == tok.pad_id] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and the machine may be busy
    for it in range(steps):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 10 == 0 or it == steps - 1:
            history.append({"iter": it, "loss": round(loss.item(), 4)})
            if it % 50 == 0:
                history[-1].update(train_loss=round(loss.item(), 4), val_loss=round(loss.item() + 0.1, 4))
    torch.set_num_threads(threads)
    pretrain_history = [{"iter": i, "train_loss": 4.0 - i / 400, "val_loss": 4.1 - i / 450}
                        for i in range(0, 1000, 100)]

    def ckpt(kind, m):
        return {"kind": kind, "model_args": dataclasses.asdict(cfg), "model": m.state_dict(),
                "vocab": tok.vocab, "config": {"note": "tiny test fixture"}, "iter_num": steps,
                "best_val_loss": history[-1]["loss"], "history": history,
                "pretrain_history": pretrain_history}

    for name, kind, m in (("out-instr", "instr", model), ("out-instr-b", "instr", GPT(cfg)),
                          ("out-pre", "pretrain", model)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        save_checkpoint(ckpt(kind, m), os.path.join(root, name, "ckpt.pt"))
    _BUILT[root] = root
    return root


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(port, proc, timeout=60):
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return r.read().decode()
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"no answer from {url} in {timeout} s")


@contextlib.contextmanager
def streamlit_server(args, out_root, log_path):
    """Run `args` (a streamlit command) in its own process group; always killed on exit."""
    env = dict(os.environ, LLMFS_OUT_ROOT=out_root, LLMFS_DEVICE="cpu",
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", PYTHONUNBUFFERED="1")
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def build_broken_checkpoint(root, src_root):
    """root/out-instr: an instruction checkpoint whose weights are NaN (a diverged run): every script
    refuses it when it loads (checkpoint.model_from_checkpoint)."""
    src = os.path.join(build_tiny_checkpoints(src_root), "out-instr", "ckpt.pt")
    ck = torch.load(src, weights_only=True)
    ck["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                   for k, v in ck["model"].items()}
    os.makedirs(os.path.join(root, "out-instr"), exist_ok=True)
    save_checkpoint(ck, os.path.join(root, "out-instr", "ckpt.pt"))
    return root


def build_constant_checkpoint(root, src_root, token_id):
    """root/out-instr: an instruction checkpoint that writes token_id at every step, whatever it reads
    (ln_f's gain is 0, so every final state is ln_f's bias, which points at token_id's row of the tied
    output table) — for the tests that the raw trace keeps the generated ids."""
    src = os.path.join(build_tiny_checkpoints(src_root), "out-instr", "ckpt.pt")
    ck = torch.load(src, weights_only=True)
    sd = {k: v.clone() for k, v in ck["model"].items()}
    sd["ln_f.weight"].zero_()
    sd["ln_f.bias"].zero_()
    sd["ln_f.bias"][0] = 10.0
    table = sd["wte.weight"]
    table[:, 0] = 0.0
    table[token_id, 0] = 1.0  # logits = table @ bias: 10 for token_id, 0 for the rest
    sd["lm_head.weight"] = table  # tied: both names hold the same table
    ck["model"] = sd
    os.makedirs(os.path.join(root, "out-instr"), exist_ok=True)
    save_checkpoint(ck, os.path.join(root, "out-instr", "ckpt.pt"))
    return root


@pytest.fixture(scope="session")
def out_root(tmp_path_factory):
    """A folder like the repository root for the app: out-instr (trained a little), out-instr-b
    (untrained) and out-pre (a pretrain checkpoint the app must not list). Built once per test run."""
    return build_tiny_checkpoints(str(tmp_path_factory.mktemp("ckpts")))


# -------------------------------------------------------------------- a model that knows its answers
PRESETS = {"¿A qué familia pertenece el perro?": "Los perros son caninos.",
           "¿Qué tipo de animal es el gato?": "Los gatos son felinos.",
           "¿Cuál es la capital de Costa Rica?": "La capital de Costa Rica es San José.",
           "¿Cuál es la capital de Panamá?": "No lo sé."}


def fit_instr(path, examples, block_size, steps):
    """path/ckpt.pt: a 2x64 instruction model trained full-batch on examples (prompt, response, history,
    system) until it knows them. Returns (model, tokenizer, its config)."""
    from checkpoint import pad_batch, save_checkpoint
    from model import GPT, GPTConfig
    from tokenizer import BASE_CHARS, CharTokenizer, instruction_example
    tok = CharTokenizer.from_texts([BASE_CHARS])
    cfg = GPTConfig(vocab_size=len(tok), block_size=block_size, n_layer=2, n_head=2, n_embd=64)
    torch.manual_seed(0)
    model = GPT(cfg)
    pairs = [instruction_example(tok, p, r, block_size + 1, h, s)[:2] for p, r, h, s in examples]
    x, y = pad_batch([a for a, _ in pairs], tok.pad_id), pad_batch([b for _, b in pairs], -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    os.makedirs(path)
    save_checkpoint({"kind": "instr", "model_args": cfg.__dict__, "model": model.state_dict(), **tok.state()},
                    os.path.join(path, "ckpt.pt"))
    return model, tok, cfg


def trained_instr(path):
    """A small instruction checkpoint that has learned the answers to the app's preset questions (an
    under-trained model has near-ties between tokens, which any rounding flips; a trained one does not)."""
    fit_instr(path, [(q, a, (), "") for q, a in PRESETS.items()], block_size=96, steps=250)
    return str(path)


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory):
    """A folder with out-instr (trained_instr) and out-pre (the same weights as a pretrain checkpoint)."""
    root = tmp_path_factory.mktemp("trained")
    trained_instr(root / "out-instr")
    ck = torch.load(root / "out-instr" / "ckpt.pt", weights_only=True)
    os.makedirs(root / "out-pre")
    save_checkpoint({**ck, "kind": "pretrain"}, str(root / "out-pre" / "ckpt.pt"))
    return root
