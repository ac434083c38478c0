"""
An OpenAI-compatible HTTP server for the checkpoints this kit trains (FastAPI + uvicorn), so the
`openai` client, curl scripts and chat UIs can talk to a model you trained from scratch.

    python serve.py --out_dir=out-instr                     # http://127.0.0.1:8000/v1
    python serve.py --out_dir=out-instr,out --port=8001     # several models, chosen by "model"
    python serve.py --out_dir=out-instr --api_key=secret    # or LLMFS_API_KEY=secret: Bearer auth on /v1
    curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "out-instr", "messages": [{"role": "user", "content": "¿Los perros son caninos?"}]}'

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (instruction checkpoints),
POST /v1/completions (raw continuation; any checkpoint). A model's id is its out_dir as given.

Chat: the messages go through the kit's chat template (tokenizer.encode_chat): the system
messages become the system prompt, earlier user/assistant pairs the turns (oldest dropped first if
they do not fit), the last user message the question. Extra fields: "top_k", and "faq": true to
answer the three known facts from the app's FAQ table (app.match_faq, imported; only for a
question that is unambiguous alone).

"n": 1..max_n choices of one prompt, generated together as one batch (rows of the same prompt, each
sampled on its own: GPT.generate_stream decodes 8 rows in ~2.5 times one row's time at this size);
usage counts the prompt once and the completion tokens of every choice.

Concurrency: generation runs on `workers` threads, off the event loop. Requests beyond
workers + queue_size in flight are refused at once with 429 and Retry-After. A streaming client that
disconnects stops its generation at the next token.
"""
import asyncio
import hmac
import json
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from configurator import configure, fail

# -----------------------------------------------------------------------------
out_dir = "out-instr"  # one or more out dirs, comma-separated
host = "127.0.0.1"  # localhost only; 0.0.0.0 (every interface) only where a container needs it
port = 8000
api_key = ""  # '' = the LLMFS_API_KEY environment variable, if set; then every /v1 call needs it
device = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
workers = 2  # generations at once (threads); each gets cores / workers torch threads
queue_size = 8  # requests that may wait for a worker; beyond that: 429
max_tokens_limit = 1024  # the most tokens one request may ask for
max_prompt_chars = 4000
max_body_bytes = 4_000_000  # a request body over this is refused (413) before it is parsed: a long chat is ~100 kB
max_n = 8  # the most choices ("n") one request may ask for: they are decoded together as one batch
# -----------------------------------------------------------------------------
ROLES = ("system", "developer", "user", "assistant")  # developer: newer clients' name for system


class APIError(Exception):
    """An error for the client, sent in OpenAI's shape: {"error": {"message", "type", "code", "param"}}."""

    def __init__(self, status, message, code=None, type="invalid_request_error", param=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.type, self.param, self.headers = status, code, type, param, headers or {}

    def body(self):
        return {"error": {"message": str(self), "type": self.type, "code": self.code, "param": self.param}}


class Server:
    """The loaded models, the worker threads and the in-flight count (the bounded queue)."""

    def __init__(self, out_dirs, device, workers, queue_size):
        import torch

        from checkpoint import load_checkpoint, model_from_checkpoint, pick_device
        self.device = pick_device(device)
        # Only the worker threads compute with several cores (workers x threads = cores). The models load here
        # on one core: once a thread has run a parallel operation it keeps a team of OpenMP threads, and an
        # idle team beside the workers' slowed generation down 2x on 2 cores (README, "Serving")
        torch.set_num_threads(1)
        self.models = {}
        for d in out_dirs:
            ckpt = load_checkpoint(d, kinds=("pretrain", "instr"))
            model, tok = model_from_checkpoint(ckpt, self.device)
            self.models[d] = {"model": model, "tok": tok, "kind": ckpt["kind"], "created": int(os.path.getmtime(
                os.path.join(d, "ckpt.pt"))), "params": model.num_params(), "quant": ckpt.get("quant")}
        threads = max(1, (os.cpu_count() or 1) // workers)  # set in each worker thread, as it starts
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate",
                                       initializer=torch.set_num_threads, initargs=(threads,))
        self.capacity = workers + queue_size
        self.lock = threading.Lock()
        self.in_flight = self.served = self.cancelled = 0

    def admit(self):
        with self.lock:
            if self.in_flight >= self.capacity:
                raise APIError(429, f"the server is busy ({self.in_flight} requests in flight); retry shortly",
                               code="rate_limit_exceeded", type="rate_limit_error", headers={"Retry-After": "1"})
            self.in_flight += 1

    def release(self, cancelled=False):
        with self.lock:
            self.in_flight -= 1
            self.served += 1
            self.cancelled += cancelled


# --------------------------------------------------------------------------- request checking
def field(body, name, kind, default, check=None, why=""):
    """body[name] of type kind (default if absent or null), or a 400 naming the field."""
    value = body.get(name)
    if value is None:
        return default
    ok_type = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
    if not ok_type or (check and not check(value)):
        raise APIError(400, f"'{name}' must be {why}, got {json.dumps(value)[:60]}", code="invalid_value", param=name)
    return value


# request fields that would change what comes back, which these models cannot do: a 400 naming the field,
# so that a client expecting JSON, tool calls or log-probabilities hears so instead of getting plain text
UNSUPPORTED = {
    "response_format": lambda v: v not in (None, "text") and not (isinstance(v, dict) and v.get("type", "text") == "text"),
    "tools": bool, "functions": bool,
    "tool_choice": lambda v: v not in (None, "none", "auto"), "function_call": lambda v: v not in (None, "none", "auto"),
    "logprobs": lambda v: v not in (None, False, 0), "top_logprobs": lambda v: v not in (None, 0),
    "logit_bias": bool, "presence_penalty": lambda v: v not in (None, 0), "frequency_penalty": lambda v: v not in (None, 0),
    "echo": bool, "suffix": bool, "best_of": lambda v: v not in (None, 1),
    "audio": bool, "modalities": lambda v: v not in (None, ["text"]),
}


def sampling(body):
    """The generation settings of a request, checked."""
    for name, used in UNSUPPORTED.items():
        if body.get(name) is not None and used(body[name]):
            raise APIError(400, f"'{name}' is not supported by this server (a small GPT that writes plain text)",
                           code="unsupported_parameter", param=name)
    given = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if given == "max_completion_tokens" and body.get("max_tokens") not in (None, body["max_completion_tokens"]):
        raise APIError(400, "give max_completion_tokens or max_tokens, not both with different values",
                       code="invalid_value", param="max_tokens")
    max_tokens = field(body, given, int, 128, lambda v: v >= 1, "an integer >= 1")
    if max_tokens > max_tokens_limit:
        raise APIError(400, f"{given}={max_tokens} is over this server's limit of {max_tokens_limit}",
                       code="max_tokens_over_limit", param=given)
    stop = field(body, "stop", (str, list), [], lambda v: (isinstance(v, str) and v != "") or (
        isinstance(v, list) and len(v) <= 4 and all(isinstance(s, str) and s for s in v)),
                 "a non-empty string or a list of at most 4 of them")
    return {
        "n": field(body, "n", int, 1, lambda v: 1 <= v <= max_n, f"an integer from 1 to {max_n}"),
        "max_tokens": max_tokens,
        "temperature": float(field(body, "temperature", (int, float), 1.0, lambda v: 0 <= v <= 2, "between 0 and 2")),
        "top_p": float(field(body, "top_p", (int, float), 1.0, lambda v: 0 < v <= 1, "in (0, 1]")),
        "top_k": field(body, "top_k", int, 0, lambda v: v >= 0, "an integer >= 0 (0 = all tokens)"),
        "seed": field(body, "seed", int, None, lambda v: 0 <= v < 2 ** 64, "an integer from 0 to 2**64 - 1"),
        "stop": [stop] if isinstance(stop, str) else stop,
        "stream": field(body, "stream", bool, False, why="true or false"),
        "include_usage": bool(field(body, "stream_options", dict, {}, why="an object").get("include_usage")),
    }


def checked_prompt(text, entry, instr, history=(), system="", max_tokens=0):
    """Prompt text -> token ids the model reads (for chat: the chat template with the earlier turns and
    the system prompt), or a 400 if the question (with the system prompt) cannot be read whole."""
    from chat import prompt_ids
    from tokenizer import clean_text
    text = clean_text(text)
    if instr:
        text = text.strip()
    if not text:
        raise APIError(400, "the prompt is empty", code="empty_prompt", param="messages" if instr else "prompt")
    if len(text) + len(system) > max_prompt_chars:
        raise APIError(400, f"the question and system prompt hold more than {max_prompt_chars} characters",
                       code="prompt_too_long")
    # a chat client resends the whole conversation: the oldest turns go first (they would not fit the
    # window anyway), so a long chat goes on instead of failing from some turn on
    room, kept = max_prompt_chars - len(text) - len(system), []
    for q, a in reversed(history):
        room -= len(q) + len(a)
        if room < 0:
            break
        kept.insert(0, (q, a))
    history = tuple(kept)
    tok, bs = entry["tok"], entry["model"].config.block_size
    if system and tok.sys_id is None:
        raise APIError(400, "this model's vocabulary has no <sys> token (it predates system prompts): "
                            "send no system message", code="system_not_supported", param="messages")
    ids = tok.encode_chat(text, (), system)[0] if instr else tok.encode(text)
    if len(ids) >= bs:
        raise APIError(400, f"the prompt is {len(ids)} tokens; this model reads at most {bs - 1} before answering",
                       code="prompt_too_long")
    if instr:  # the earlier turns that fit (oldest dropped first), and room for the answer (as everywhere:
        # a question that filled the window would slide the chat template out of view mid-answer)
        ids = prompt_ids(tok, text, bs, max_tokens, history, system)[0]
    return text, ids


def chat_prompt(body):
    """(question, earlier turns, system prompt) from a chat request's messages: the system messages
    joined, user/assistant pairs in order (a user message with no answer after it pairs with ''),
    and the last message, which must be the user's."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", code="empty_messages", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise APIError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}", code="invalid_role",
                           param=f"messages[{i}].role")
        content = m.get("content")
        if content is None and m["role"] == "assistant":  # OpenAI allows it (an answer that was a tool call)
            m["content"] = content = ""
        if isinstance(content, list):  # the content-parts form: text parts only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", code="invalid_content")
            m["content"] = "".join(p["text"] for p in content)
        elif not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string", code="invalid_content")
    if messages[-1]["role"] != "user":
        raise APIError(400, "the last message must be the user's", code="invalid_role", param="messages")
    from tokenizer import clean_text
    system = " ".join(clean_text(m["content"]).strip() for m in messages if m["role"] in ("system", "developer")).strip()
    turns, pending = [], None
    for m in messages[:-1]:
        text = clean_text(m["content"]).strip()
        if m["role"] == "user":
            if pending is not None:
                turns.append((pending, ""))
            pending = text
        elif m["role"] == "assistant":
            turns.append((pending or "", text))
            pending = None
    if pending is not None:
        turns.append((pending, ""))
    return messages[-1]["content"], tuple(turns), system


# --------------------------------------------------------------------------- generation (worker threads)
class Choice:
    """One row of a generation: its text so far, what of it was sent, its token count and how it ended."""

    def __init__(self, i, tok, instr, stops, emit):
        self.i, self.tok, self.instr, self.stops, self.emit = i, tok, instr, stops, emit
        from tokenizer import StreamDecoder
        self.dec, self.text, self.sent, self.n, self.finish = StreamDecoder(tok), "", 0, 0, None

    def add(self, t):
        """Take the row's next token id; emit the text that is now safe to send."""
        self.n += 1
        if self.instr and t == self.tok.eos_id:  # the answer is complete: send what was held back
            self.end("stop")
            return
        self.text += self.dec.add(t)
        hits = [i for i in (self.text.find(x) for x in self.stops) if i >= 0]
        if hits:  # a stop sequence: the text ends before it
            self.emit(self.i, self.text[self.sent:min(hits)])
            self.finish = "stop"
            return
        # hold back an ending that may be the start of a stop sequence
        held = max([k for x in self.stops for k in range(1, len(x)) if self.text.endswith(x[:k])], default=0)
        if len(self.text) - held > self.sent:
            self.emit(self.i, self.text[self.sent:len(self.text) - held])
            self.sent = len(self.text) - held

    def end(self, finish):
        self.text += self.dec.flush()
        self.emit(self.i, self.text[self.sent:])
        self.finish = finish


def generate(entry, ids, s, instr, cancel, emit, fixed=None):
    """Generate on a worker thread: the request's n choices as one batch of n rows of the same prompt.
    emit(pieces) gets, once per step, the new text of the choices that wrote some, as (choice index, text)
    pairs (never half a character, never part of a stop sequence): one wake-up of the event loop per step,
    not per choice. Returns [(finish_reason, completion tokens)], one per choice. fixed: a text to answer
    instead of the model (the FAQ's sentence), its tokens and <eos> sent through the same rows, so that
    stop sequences and max_tokens cut it as they cut a generated answer."""
    import torch
    model, tok = entry["model"], entry["tok"]
    gen = torch.Generator(device=model.wte.weight.device)
    gen.manual_seed(s["seed"] if s["seed"] is not None else int.from_bytes(os.urandom(4), "little"))
    idx = torch.tensor([ids] * s["n"], dtype=torch.long, device=gen.device)  # (n, T)
    pieces = []  # this step's (index, text) pairs
    rows = [Choice(i, tok, instr, s["stop"], lambda i, text: text and pieces.append((i, text)))
            for i in range(s["n"])]
    steps = model.generate_stream(idx, s["max_tokens"], temperature=s["temperature"], top_k=s["top_k"] or None,
                                  top_p=s["top_p"], stop_token=tok.eos_id if instr else None, generator=gen)
    if fixed is not None:
        steps = (torch.tensor([t] * s["n"]) for t in (tok.encode(fixed) + [tok.eos_id])[:s["max_tokens"]])
    for t in steps:
        if cancel.is_set():  # the client went away
            return [("cancelled", r.n) for r in rows]
        for r, t_row in zip(rows, t.tolist()):  # t: (n,) the next token of every row
            if r.finish is None:
                r.add(t_row)
        if pieces:
            emit(pieces[:])
            pieces.clear()
        if all(r.finish for r in rows):  # every choice has ended (a finished row's later tokens are dropped)
            break
    for r in rows:
        if r.finish is None:  # max_tokens reached
            r.end("length")
    if pieces:
        emit(pieces)
    return [(r.finish, r.n) for r in rows]


# --------------------------------------------------------------------------- the HTTP app
def create_app(server, key=""):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="LLM From Scratch", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def api_error(request, e):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, e):  # an unknown route (404) or method (405): the same error shape
        return JSONResponse(APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                                     code="not_found" if e.status_code == 404 else "method_not_allowed").body(),
                            status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def any_error(request, e):  # never a traceback in a response
        return JSONResponse(APIError(500, f"internal error: {type(e).__name__}", type="server_error").body(),
                            status_code=500)

    @app.middleware("http")
    async def auth(request, call_next):
        if key and request.url.path.startswith("/v1"):
            # "Bearer KEY" (HTTP lets the scheme be written in any case)
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
                e = APIError(401, "missing or wrong API key (Authorization: Bearer ...)", code="invalid_api_key")
                return JSONResponse(e.body(), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(server.models), "device": server.device, "in_flight": server.in_flight,
                "served": server.served, "cancelled": server.cancelled}

    def model_card(name, e):
        return {"id": name, "object": "model", "created": e["created"], "owned_by": "llm-from-scratch",
                "kind": e["kind"], "parameters": e["params"], "block_size": e["model"].config.block_size,
                "vocab_size": len(e["tok"]), "tokenizer": e["tok"].kind, "quantized": e["quant"] is not None}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(name, e) for name, e in server.models.items()]}

    @app.get("/v1/models/{name:path}")  # client.models.retrieve(...): an id may hold slashes (out dirs)
    async def one_model(name: str):
        if name not in server.models:
            raise APIError(404, f"model '{name}' is not served here (served: {', '.join(server.models)})",
                           code="model_not_found", param="model")
        return model_card(name, server.models[name])

    async def read_body(request):
        raw = b""
        async for part in request.stream():  # read up to a limit, not whatever size a client sends
            raw += part
            if len(raw) > max_body_bytes:
                raise APIError(413, f"the request body is over {max_body_bytes:,} bytes", code="request_too_large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # [[[[... nested past Python's limit too
            raise APIError(400, "the request body is not valid JSON", code="invalid_json")
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object", code="invalid_json")
        name = body.get("model")
        if not isinstance(name, str):
            raise APIError(400, f"'model' must be the name of a served model ({', '.join(server.models)}), "
                                f"got {json.dumps(name)[:60]}", code="invalid_value", param="model")
        if name not in server.models:
            raise APIError(404, f"model '{name}' is not served here (available: {', '.join(server.models)})",
                           code="model_not_found", param="model")
        return body, name, server.models[name]

    async def respond(name, entry, ids, s, instr, faq_text=None):
        """Run one generation of s["n"] choices (or the FAQ answer, n times) and answer in the chat or
        completions format."""
        obj = "chat.completion" if instr else "text_completion"
        rid, created = f"{'chatcmpl' if instr else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())

        def choice(i, text=None, finish=None, first=False):
            if not instr:
                return {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

        def usage(ends):  # the prompt once, the completion tokens of every choice
            n = sum(k for _, k in ends)
            return {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}

        loop, cancel, queue = asyncio.get_running_loop(), threading.Event(), asyncio.Queue()
        server.admit()

        def work():
            try:
                return generate(entry, ids, s, instr, cancel, queue_put, fixed=faq_text)
            finally:  # runs once per admitted request, whatever happened
                server.release(cancel.is_set())

        def queue_put(pieces):  # a step's [(choice index, text)] from the worker thread to the response
            loop.call_soon_threadsafe(queue.put_nowait, pieces)

        future = loop.run_in_executor(server.pool, work)
        if not s["stream"]:
            try:
                ends = await future
            except BaseException:
                cancel.set()
                raise
            texts = [""] * len(ends)
            while not queue.empty():
                for i, text in queue.get_nowait():
                    texts[i] += text
            cs = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                   "finish_reason": finish} if instr else choice(i, text, finish)
                  for i, (text, (finish, _)) in enumerate(zip(texts, ends))]
            return JSONResponse({"id": rid, "object": obj, "created": created, "model": name, "choices": cs,
                                 "usage": usage(ends)})

        def chunk(c, extra=None):
            payload = {"id": rid, "object": obj + ("" if not instr else ".chunk"), "created": created,
                       "model": name, "choices": [c] if c else [], **(extra or {})}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        async def events():
            try:
                if instr:
                    for i in range(s["n"]):
                        yield chunk(choice(i, first=True))
                getter = None
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    finished, _ = await asyncio.wait({getter, future}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in finished:  # a step's pieces: one chunk per choice, written together
                        yield "".join(chunk(choice(i, text)) for i, text in getter.result())
                        continue
                    getter.cancel()
                    while not queue.empty():
                        yield "".join(chunk(choice(i, text)) for i, text in queue.get_nowait())
                    break
                try:
                    ends = future.result()
                except Exception as e:  # the stream has begun: the error goes in an event of its own
                    yield f"data: {json.dumps(APIError(500, f'generation failed: {type(e).__name__}', type='server_error').body())}\n\n"
                    return
                for i, (finish, _) in enumerate(ends):
                    yield chunk(choice(i, None, finish))
                if s["include_usage"]:
                    yield chunk(None, {"usage": usage(ends)})
                yield "data: [DONE]\n\n"
            finally:  # normal end, or the client disconnected (the response task is cancelled)
                if not future.done():
                    cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body, name, entry = await read_body(request)
        if entry["kind"] != "instr":
            raise APIError(400, f"'{name}' is a pretrained model, which continues text: use /v1/completions "
                                f"(chat needs an instruction checkpoint from finetune_instr.py)",
                           code="model_not_chat", param="model")
        question, history, system = chat_prompt(body)
        s = sampling(body)
        text, ids = checked_prompt(question, entry, True, history, system, s["max_tokens"])
        faq_text = None
        if field(body, "faq", bool, False, why="true or false") and not system:  # a system prompt ("answer yes or no") is the model's job
            from app import FAQ, match_faq
            key_ = match_faq(text)
            faq_text = FAQ[key_] if key_ else None
        return await respond(name, entry, ids, s, True, faq_text)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body, name, entry = await read_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            raise APIError(400, f"'prompt' is a list of {len(prompt)} prompts: this server answers one prompt per "
                                f"request (send them one by one; 'n' asks for several completions of one)",
                           code="invalid_value", param="prompt")
        if not isinstance(prompt, str):  # token ids too: another tokenizer's ids would mean other text here
            raise APIError(400, "'prompt' must be a string (this model's own tokenizer reads it)",
                           code="invalid_value", param="prompt")
        s = sampling(body)
        _, ids = checked_prompt(prompt, entry, instr=False)
        return await respond(name, entry, ids, s, False)

    return app


if __name__ == "__main__":
    configure(globals())
    key = api_key or os.environ.get("LLMFS_API_KEY", "")
    dirs = [d.strip() for d in out_dir.split(",") if d.strip()]
    if not dirs or workers < 1 or queue_size < 0 or max_tokens_limit < 1 or max_n < 1:
        fail("need --out_dir, --workers >= 1, --queue_size >= 0, --max_tokens_limit >= 1 and --max_n >= 1")
    if not 0 <= port <= 65535:
        fail(f"--port must be from 0 to 65535, got {port}")
    try:
        import uvicorn

        from checkpoint import CheckpointError
    except ImportError as e:
        fail(f"{e.name} is not installed: pip install -r requirements.txt")
    with socket.socket() as probe:  # a port in use is one clear line, before the models load
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except (OSError, UnicodeError) as e:  # in use, not allowed, or a --host that is no address
            fail(f"cannot serve on {host}:{port}: {e.strerror if isinstance(e, OSError) and e.strerror else e}")
    try:
        server = Server(dirs, device, workers, queue_size)
    except (CheckpointError, ValueError) as e:
        fail(e)
    names = ", ".join(f"{d} ({e['kind']})" for d, e in server.models.items())
    print(f"serving {names} on http://{host}:{port}/v1 ({server.device})"
          + (" (API key required)" if key else ""), flush=True)
    try:
        uvicorn.run(create_app(server, key), host=host, port=port, log_level="warning")
    except (OSError, SystemExit) as e:
        fail(f"cannot serve on {host}:{port}: {e}")
