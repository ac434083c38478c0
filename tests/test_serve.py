"""serve.py: a real uvicorn on 127.0.0.1, driven by the official openai client (chat, streaming, stop,
length, auth, errors, /v1/models), raw HTTP for what the client hides (malformed JSON, SSE framing,
429 + Retry-After, disconnects), and bench.py --mode=serve against it."""
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import torch

from conftest import PRESETS, ROOT, assert_one_line_error, free_port, run, run_many

openai = pytest.importorskip("openai")
KEY = "test-key"


@pytest.fixture(scope="module")
def server(trained_root):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), "--out_dir=out-instr,out-pre",
                             f"--port={port}", f"--api_key={KEY}", "--workers=2", "--queue_size=0",
                             "--max_tokens_limit=100000"], cwd=trained_root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(proc.stdout.read().decode())
                time.sleep(0.2)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def client(port, key=KEY):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=60)


def post(port, path, body, key=KEY):
    """A raw POST: (status, headers, body text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request("POST", path, data, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    r = c.getresponse()
    out = r.status, dict(r.getheaders()), r.read().decode()
    c.close()
    return out


def health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.load(r)


def test_chat_streamed_and_not(server):
    c = client(server)
    q = "¿Cuál es la capital de Costa Rica?"
    r = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}], temperature=0)
    assert r.choices[0].message.content == PRESETS[q] and r.choices[0].finish_reason == "stop"
    assert r.object == "chat.completion" and r.model == "out-instr"
    assert r.usage.prompt_tokens == len(q) + 2 and r.usage.completion_tokens == len(PRESETS[q]) + 1  # + <eos>
    chunks = list(c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}],
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == PRESETS[q]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # earlier turns and the system prompt go through the chat template: the prompt is all of them
    from tokenizer import BASE_CHARS, CharTokenizer
    tok = CharTokenizer.from_texts([BASE_CHARS])
    history = [("¿Y los gatos?", "Sí.")]  # short: the whole conversation fits the tiny model's window
    r = c.chat.completions.create(model="out-instr", temperature=0, max_tokens=10, messages=[
        {"role": "system", "content": "Sé breve."}, {"role": "user", "content": history[0][0]},
        {"role": "assistant", "content": history[0][1]}, {"role": "user", "content": q}])
    assert r.usage.prompt_tokens == len(tok.encode_chat(q, history, "Sé breve.")[0]) > len(q) + 2 + 20
    # a long question leaves room for the answer (cut from the left, as sample.py and the app cut it): the
    # window (96 here) must not slide the chat template out of view in the middle of the answer
    long_q = "perro " * 9 + q  # 54 + 34 characters + <instr> <resp>: 90 tokens, over the 96 - 10 the answer leaves
    r = c.chat.completions.create(model="out-instr", temperature=0, max_tokens=10,
                                  messages=[{"role": "user", "content": long_q}])
    assert r.usage.prompt_tokens == 96 - 10
    status, headers, text = post(server, "/v1/chat/completions", {
        "model": "out-instr", "messages": [{"role": "user", "content": q}], "temperature": 0, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_stop_sequences_max_tokens_seed_and_faq(server):
    c = client(server)
    q = "¿Cuál es la capital de Costa Rica?"
    r = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}], temperature=0,
                                  stop=["Rica", "zzz"])
    assert r.choices[0].message.content == "La capital de Costa " and r.choices[0].finish_reason == "stop"
    streamed = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}],
                                         temperature=0, stop="Costa", stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == "La capital de "
    r = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}], temperature=0,
                                  max_tokens=5)
    assert r.choices[0].message.content == "La ca" and r.choices[0].finish_reason == "length"
    a, b = (c.completions.create(model="out-pre", prompt="El perro", max_tokens=30, temperature=1.0, seed=7,
                                 extra_body={"top_k": 20, "top_p": 0.9}) for _ in range(2))
    assert a.choices[0].text == b.choices[0].text and a.choices[0].finish_reason == "length"
    assert a.object == "text_completion" and a.usage.completion_tokens == 30
    r = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": "¿Los perros son caninos?"}],
                                  extra_body={"faq": True})
    from app import FAQ
    assert r.choices[0].message.content == FAQ["fact:perro"] and r.choices[0].finish_reason == "stop"
    # the fixed sentence is cut by stop sequences and max_tokens as a generated answer is
    cut = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": "¿Los perros son caninos?"}],
                                    stop=["caninos"], extra_body={"faq": True})
    short = c.chat.completions.create(model="out-instr", max_tokens=4, extra_body={"faq": True},
                                      messages=[{"role": "user", "content": "¿Los perros son caninos?"}])
    assert cut.choices[0].message.content == FAQ["fact:perro"].split("caninos")[0]
    assert short.choices[0].message.content == FAQ["fact:perro"][:4] and short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 4
    # with a system prompt the model answers (the FAQ's fixed sentence would ignore "answer yes or no")
    r = c.chat.completions.create(model="out-instr", temperature=0, max_tokens=5, extra_body={"faq": True},
                                  messages=[{"role": "system", "content": "Responde solo sí o no."},
                                            {"role": "user", "content": "¿Los perros son caninos?"}])
    assert r.choices[0].message.content != FAQ["fact:perro"]


def test_n_choices_are_one_batch_each_row_its_own(server):
    c = client(server)
    q = "¿Cuál es la capital de Costa Rica?"
    r = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}], temperature=0, n=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert all(ch.message.content == PRESETS[q] and ch.finish_reason == "stop" for ch in r.choices)
    assert r.usage.prompt_tokens == len(q) + 2 and r.usage.completion_tokens == 3 * (len(PRESETS[q]) + 1)
    # sampled: the rows draw their own tokens; the same seed gives the same choices again
    a, b = (c.completions.create(model="out-pre", prompt="El perro", max_tokens=30, temperature=1.0, seed=7, n=4)
            for _ in range(2))
    texts = [ch.text for ch in a.choices]
    assert texts == [ch.text for ch in b.choices] and len(set(texts)) > 1
    assert all(ch.finish_reason == "length" for ch in a.choices) and a.usage.completion_tokens == 4 * 30
    # streamed: every chunk names its choice; each choice gets its role, its text up to the stop, its end
    chunks = list(c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}],
                                            temperature=0, n=2, stop="Costa", stream=True,
                                            stream_options={"include_usage": True}))
    for i in (0, 1):
        mine = [ch.choices[0] for ch in chunks if ch.choices and ch.choices[0].index == i]
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "stop"
        assert "".join(x.delta.content or "" for x in mine) == "La capital de "
    # each row ends on the token that completes "Costa" (one token per character here)
    assert chunks[-1].usage.completion_tokens == 2 * len("La capital de Costa")
    r = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": "¿Los perros son caninos?"}],
                                  n=2, extra_body={"faq": True})
    from app import FAQ
    assert [ch.message.content for ch in r.choices] == [FAQ["fact:perro"]] * 2


def test_generate_decodes_the_n_rows_in_one_batch(trained_root):
    """serve.generate in-process: one generate_stream call with n rows; greedy rows equal the n=1 answer;
    rows that end early (a stop sequence) stop sending while the others go on."""
    import serve
    from checkpoint import load_checkpoint, model_from_checkpoint
    model, tok = model_from_checkpoint(load_checkpoint(str(trained_root / "out-pre")))
    entry, calls = {"model": model, "tok": tok}, []
    plain = model.generate_stream
    model.generate_stream = lambda idx, *a, **kw: calls.append(tuple(idx.shape)) or plain(idx, *a, **kw)
    ids = tok.encode("El perro")
    s = {"n": 1, "max_tokens": 25, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 1, "stop": []}

    emits = []

    def run_n(**kw):
        out, emits[:] = {}, []

        def emit(pieces):  # once per step: the (choice, text) pairs of the choices that wrote something
            emits.append([i for i, _ in pieces])
            for i, text in pieces:
                out[i] = out.get(i, "") + text
        ends = serve.generate(entry, ids, {**s, **kw}, False, threading.Event(), emit)
        return [out.get(i, "") for i in range(len(ends))], ends
    one, _ = run_n()
    four, ends = run_n(n=4)
    assert calls == [(1, len(ids)), (4, len(ids))]
    assert four == one * 4 and ends == [("length", 25)] * 4
    assert len(emits) <= 26 and all(len(set(e)) == len(e) for e in emits) and [0, 1, 2, 3] in emits
    # sampled rows with a stop sequence that some of them write and others not: those end there, the
    # others run to max_tokens with exactly the text they write without it (same seed, same draws)
    free, _ = run_n(n=6, temperature=1.0)
    stop = next(x for t in free for x in (t[i:i + 2] for i in range(len(t) - 1)) if not all(x in u for u in free))
    texts, ends = run_n(n=6, temperature=1.0, stop=[stop])
    for f, text, (finish, k) in zip(free, texts, ends):
        if stop in f:
            # counted up to the token that completes the stop (one token per character here), no further
            assert finish == "stop" and text == f[:f.index(stop)] and k == f.index(stop) + len(stop), (f, text, stop)
        else:
            assert finish == "length" and text == f and k == 25, (f, text, stop)
    assert {finish for finish, _ in ends} == {"stop", "length"}


def test_models_load_on_one_core_and_each_worker_sets_its_threads(trained_root):
    """Server: the loading thread runs on one core (its idle OpenMP team would slow the workers' down) and
    every worker thread computes with cores / workers threads of its own."""
    import torch

    import serve
    before = torch.get_num_threads()
    try:
        cores = os.cpu_count() or 1
        for workers in (1, 2):
            srv = serve.Server([str(trained_root / "out-instr")], "cpu", workers, 0)
            assert torch.get_num_threads() == 1
            seen = {srv.pool.submit(lambda: (threading.get_ident(), torch.get_num_threads())).result()
                    for _ in range(8)}
            assert {n for _, n in seen} == {max(1, cores // workers)}
            srv.pool.shutdown()
    finally:
        torch.set_num_threads(before)


def test_models_auth_and_errors_in_the_openai_shape(server):
    models = {m.id: m for m in client(server).models.list()}
    assert set(models) == {"out-instr", "out-pre"} and models["out-pre"].kind == "pretrain"
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").models.list()
    c = client(server)
    user = [{"role": "user", "content": "hola"}]
    cases = [
        (openai.NotFoundError, dict(model="nope", messages=user), "model_not_found"),
        (openai.BadRequestError, dict(model="out-instr", messages=[]), "empty_messages"),
        (openai.BadRequestError, dict(model="out-instr", messages=[{"role": "wizard", "content": "x"}]), "invalid_role"),
        (openai.BadRequestError, dict(model="out-instr", messages=[{"role": "assistant", "content": "x"}]), "invalid_role"),
        (openai.BadRequestError, dict(model="out-instr", messages=[{"role": "user", "content": "x" * 200}]), "prompt_too_long"),
        (openai.BadRequestError, dict(model="out-instr", messages=user, max_tokens=10 ** 6), "max_tokens_over_limit"),
        (openai.BadRequestError, dict(model="out-pre", messages=user), "model_not_chat"),
        (openai.BadRequestError, dict(model="out-instr", messages=user, n=9), "invalid_value"),  # max_n = 8
        (openai.BadRequestError, dict(model="out-instr", messages=user, n=0), "invalid_value"),
        (openai.BadRequestError, dict(model="out-instr", messages=user, temperature=5), "invalid_value"),
        (openai.BadRequestError, dict(model="out-instr", messages=user, seed=2 ** 70), "invalid_value"),
        (openai.BadRequestError, dict(model="out-instr", messages=user, stop=""), "invalid_value"),
    ]
    for error, kw, code in cases:
        with pytest.raises(error) as e:
            c.chat.completions.create(**kw)
        assert e.value.body["code"] == code and e.value.body["message"], kw
    status, _, text = post(server, "/v1/chat/completions", b"{not json")
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_json"
    status, _, text = post(server, "/v1/chat/completions", b"[" * 100_000)  # deeper than Python's parser goes
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_json"
    status, _, text = post(server, "/v1/chat/completions", b" " * 4_000_001)  # read up to the limit, no further
    assert status == 413 and json.loads(text)["error"]["code"] == "request_too_large"
    status, _, text = post(server, "/v1/chat/completions", {"model": ["out-instr"], "messages": user})
    assert status == 400 and json.loads(text)["error"]["param"] == "model"
    status, _, text = post(server, "/v1/chat/completions", {"model": "out-instr", "messages": user, "faq": "yes"})
    assert status == 400 and "'faq' must be true or false" in json.loads(text)["error"]["message"]
    # a lone surrogate ("\\ud800" in JSON) is not a 500: it reads as the replacement mark
    status, _, text = post(server, "/v1/chat/completions", {"model": "out-instr", "max_tokens": 3,
                                                            "messages": [{"role": "user", "content": "hola \ud800"}]})
    assert status == 200, text
    status, _, text = post(server, "/v1/nowhere", {})  # an unknown route: the OpenAI error shape too
    assert status == 404 and json.loads(text)["error"]["code"] == "not_found"
    assert "Traceback" not in text
    # fields that would change the answer, which these models cannot honour: a 400 naming each, never
    # plain text that a client then fails to parse as JSON or reads as "no tool calls"
    refused = [("/v1/chat/completions", {"response_format": {"type": "json_object"}}),
               ("/v1/chat/completions", {"response_format": "json"}),
               ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
               ("/v1/chat/completions", {"logprobs": True}), ("/v1/chat/completions", {"logit_bias": {"5": -100}}),
               ("/v1/chat/completions", {"presence_penalty": 1.5}), ("/v1/completions", {"echo": True}),
               ("/v1/completions", {"suffix": " fin."}), ("/v1/completions", {"logprobs": 3})]
    for path, extra in refused:
        body = {"model": "out-instr" if "chat" in path else "out-pre", "max_tokens": 3, **extra,
                **({"messages": user} if "chat" in path else {"prompt": "hola"})}
        status, _, text = post(server, path, body)
        error = json.loads(text)["error"]
        assert status == 400 and error["code"] == "unsupported_parameter" and error["param"] == next(iter(extra)), text
    # several prompts in one completions request (LangChain's batch) or token ids: a 400 that says what to do
    status, _, text = post(server, "/v1/completions", {"model": "out-pre", "prompt": ["a", "b"]})
    assert status == 400 and "a list of 2 prompts: this server answers one prompt per request" in text
    status, _, text = post(server, "/v1/completions", {"model": "out-pre", "prompt": [5, 6]})
    assert status == 400 and "this model's own tokenizer reads it" in text
    # what current clients send: the developer role (newer models' system), an assistant turn with content
    # null, max_completion_tokens (named in its own errors), a lower-case "bearer", models.retrieve
    ok = c.chat.completions.create(model="out-instr", max_completion_tokens=3, messages=[
        {"role": "developer", "content": "Sé breve."}, {"role": "user", "content": "hola"},
        {"role": "assistant", "content": None}, {"role": "user", "content": "¿y los gatos?"}])
    assert ok.usage.completion_tokens <= 3
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="out-instr", messages=user, max_completion_tokens=10 ** 6)
    assert e.value.body["param"] == "max_completion_tokens"
    assert c.models.retrieve("out-instr").id == "out-instr"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-4o")
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    conn.request("GET", "/v1/models", headers={"Authorization": f"bearer {KEY}"})
    assert conn.getresponse().status == 200
    conn.close()
    # a long chat, resent whole at every turn as chat clients do: the oldest turns go, it never becomes a 400
    long_chat = [m for i in range(60) for m in ({"role": "user", "content": f"pregunta {i} " + "x" * 60},
                                                {"role": "assistant", "content": "No lo sé. " * 5})]
    assert c.chat.completions.create(model="out-instr", max_tokens=3, messages=long_chat + user).choices
    assert health(server)["status"] == "ok"  # still alive after all of these
    # --device defaults to auto: the best device here, named in /health (and in the start-up line)
    assert health(server)["device"] == ("cuda" if torch.cuda.is_available() else "mps" if
                                        torch.backends.mps.is_available() else "cpu")


def test_concurrency_429_and_disconnects_stop_generation(server):
    c = client(server)
    q = "¿Qué tipo de animal es el gato?"
    answers = [None, None]

    def ask(i):
        answers[i] = c.chat.completions.create(model="out-instr", messages=[{"role": "user", "content": q}],
                                               temperature=0).choices[0].message.content
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert answers == [PRESETS[q]] * 2
    before = health(server)["cancelled"]
    # two endless streams fill the server (2 workers, no queue): a third request is refused with 429
    conns = []
    for _ in range(2):
        h = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
        h.request("POST", "/v1/completions", json.dumps({"model": "out-pre", "prompt": "El", "max_tokens": 90000,
                                                         "stream": True}), {"Authorization": f"Bearer {KEY}"})
        r = h.getresponse()
        assert r.status == 200 and r.readline().startswith(b"data: ")  # generating
        conns.append(h)
    with pytest.raises(openai.RateLimitError) as e:
        c.completions.create(model="out-pre", prompt="El", max_tokens=5)
    assert e.value.response.headers["retry-after"] == "1"
    for h in conns:  # the clients go away: their generations stop
        h.sock.shutdown(2)
        h.close()
    deadline = time.time() + 20
    while health(server)["in_flight"] and time.time() < deadline:
        time.sleep(0.1)
    state = health(server)
    assert state["in_flight"] == 0 and state["cancelled"] == before + 2


def test_bench_serve_reports_latency_and_throughput(server):
    p = run("bench.py", "--mode=serve", f"--serve_url=http://127.0.0.1:{server}", "--serve_model=out-instr",
            "--clients=2", "--requests=2", f"--api_key={KEY}", "--max_new_tokens=20")
    assert p.returncode == 0, p.stderr
    assert "time to first token" in p.stdout and "aggregate" in p.stdout and "4 requests" in p.stdout
    assert "errors 0" in p.stdout
    # --choices: each request asks for n greedy choices, decoded as one batch; every choice's tokens count
    one, three = (run("bench.py", "--mode=serve", f"--serve_url=http://127.0.0.1:{server}", "--serve_model=out-instr",
                      "--clients=1", "--requests=1", f"--api_key={KEY}", "--max_new_tokens=20", f"--choices={k}")
                  for k in (1, 3))
    assert one.returncode == 0 and three.returncode == 0, three.stderr
    tokens = [int(re.search(r"\(([\d,]+) tokens in", p.stdout).group(1).replace(",", "")) for p in (one, three)]
    assert "3 choices each" in three.stdout and tokens[1] == 3 * tokens[0] > 0
    # the Dockerfile's HEALTHCHECK also passes for a container that runs serve.py (port 8000 there)
    import json as _json
    from test_docker import one
    hc = one("HEALTHCHECK")
    probe = [sys.executable if a == "python" else a.replace("localhost:8000", f"127.0.0.1:{server}")
             for a in _json.loads(hc[hc.index("CMD") + 3:].strip())]
    assert subprocess.run(probe, timeout=30).returncode == 0


def test_serve_bad_start_is_one_line(trained_root):
    busy = free_port()
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        taken, missing, no_n, big, host = run_many([
            ("serve.py", "--out_dir=out-instr", f"--port={busy}"),
            ("serve.py", "--out_dir=nothing-here", f"--port={free_port()}"),
            ("serve.py", "--out_dir=out-instr", "--max_n=0", f"--port={free_port()}"),
            ("serve.py", "--out_dir=out-instr", "--port=99999"),
            ("serve.py", "--out_dir=out-instr", "--host=" + "x" * 70, f"--port={free_port()}")], cwd=trained_root)
    assert "cannot serve on 127.0.0.1" in assert_one_line_error(taken)
    assert "--port must be from 0 to 65535, got 99999" in assert_one_line_error(big)
    assert "cannot serve on xxx" in assert_one_line_error(host)
    assert "no checkpoint" in assert_one_line_error(missing)
    assert "--max_n >= 1" in assert_one_line_error(no_n)
