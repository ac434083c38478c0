"""
Sample from a trained model, streaming to the terminal.

    python sample.py                                          # free text from out/
    python sample.py --start="La capital de" --num_samples=3 --max_new_tokens=200
    python sample.py --start=FILE:prompt.txt
    python sample.py --compile=True --max_new_tokens=2000   # each step compiled: ~15 s once, then ~2x faster
    python sample.py --out_dir=out-instr --prompt="¿Los perros son caninos?"   # one answer
    echo "¿Cuál es la capital de Costa Rica?" | python sample.py --out_dir=out-instr   # one per line
    python sample.py --out_dir=out-instr --chat=True        # a conversation: /reset, /system TEXT
    printf '¿Los perros son caninos?\n¿Y los gatos?\n' | python sample.py --out_dir=out-instr --chat=True

An instruction checkpoint (finetune_instr.py) answers prompts; a pretrained one continues text.
"""
import sys

import torch

from chat import answer_stream, prompt_ids
from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, pick_device
from configurator import configure, fail
from tokenizer import StreamDecoder, clean_text

# -----------------------------------------------------------------------------
out_dir = "out"
start = "\n"  # free-text mode: the text to continue, or FILE:path to read it from a file
prompt = ""  # instruction mode: one question; empty = read questions from stdin, one per line
num_samples = 1
max_new_tokens = 500
temperature = -1.0  # 0 = greedy; below 0 = auto: greedy for instruction models, 0.8 for free text
top_k = 200
seed = 1337
device = "auto"
use_cache = True  # free text: KV cache on (the fast path); off recomputes the whole context every token
compile = False  # compile each decoding step (torch.compile; ~15 s once, then ~2x faster; needs a C++ compiler)
show_raw = False  # instruction mode: also print the raw trace with <instr>/<resp>/<eos> visible
chat = False  # instruction mode: a conversation, one user line at a time; /reset and /system TEXT
system = ""  # instruction mode: a system prompt ("Responde solo sí o no.")
max_prompt_chars = 500
# -----------------------------------------------------------------------------
configure(globals())
if max_new_tokens < 1 or num_samples < 1:
    fail(f"--max_new_tokens and --num_samples must be at least 1, got {max_new_tokens} and {num_samples}")
if hasattr(sys.stdin, "reconfigure"):  # (a real stream; not a notebook's or a test runner's stand-in)
    sys.stdin.reconfigure(errors="replace")  # a byte that is not UTF-8 becomes U+FFFD, not a traceback

try:
    device = pick_device(device)
    ckpt = load_checkpoint(out_dir, kinds=("pretrain", "instr"))
    model, tok = model_from_checkpoint(ckpt, device)
except (ValueError, CheckpointError) as e:
    fail(e)
if compile:
    try:
        model.compile_decoding()
    except RuntimeError as e:  # no C++ compiler, an unsupported device
        fail(f"--compile=True failed: {e} (without it sampling works as usual)")
torch.manual_seed(seed)
gen = torch.Generator(device=device).manual_seed(seed)
if ckpt["kind"] == "instr":
    temp = 0.0 if temperature < 0 else temperature
else:
    temp = 0.8 if temperature < 0 else temperature


def prompt_problem(text):
    """Why a (cleaned) prompt cannot be asked, or None."""
    if not text:
        return "empty prompt"
    if len(text) > max_prompt_chars:
        return f"prompt of {len(text)} characters is longer than max_prompt_chars={max_prompt_chars}"
    return None


def answer(q, history=(), one_line=False):
    """Stream the answer to q (after the earlier turns in history) to stdout; returns its text."""
    new, parts = [], []
    for i, text in answer_stream(model, tok, q, max_new_tokens, temp, top_k, gen, history, system):
        new += [] if i is None else [i]  # the ids (the raw trace below); None: the decoder's last bytes
        parts.append(text)
        print(text.replace("\n", " ") if one_line else text, end="", flush=True)
    print(flush=True)
    if show_raw:  # what the model read and wrote, from its ids: [<sys> ...] <instr> prompt <resp> answer [<eos>]
        ids = prompt_ids(tok, q, model.config.block_size, max_new_tokens, history, system)[0]
        print("[raw] " + tok.decode(ids + new, specials=True), flush=True)
    return "".join(parts)


system = clean_text(system).strip()
if len(system) > max_prompt_chars:
    fail(f"--system of {len(system)} characters is longer than max_prompt_chars={max_prompt_chars}")
if ckpt["kind"] == "instr" and system and tok.sys_id is None:
    fail(f"{out_dir} was trained on a vocabulary without <sys> (before system prompts existed): no --system")
if chat and ckpt["kind"] == "instr":
    # one output line per input line, flushed, so that scripts can drive it through a pipe
    history = []
    if sys.stdin.isatty():
        print("chat: one question per line; /reset starts over, /system TEXT sets the system prompt "
              "(Ctrl-D to end)", file=sys.stderr)
    for line in sys.stdin:
        line = clean_text(line).strip()
        if line == "/reset":
            history = []
            print("(conversación nueva)", flush=True)
        elif line.split()[:1] == ["/system"]:
            if tok.sys_id is None:
                print("[error] this model's vocabulary has no <sys>: no system prompt", flush=True)
                continue
            if len(line[len("/system"):].strip()) > max_prompt_chars:
                print(f"[error] a system prompt longer than max_prompt_chars={max_prompt_chars}", flush=True)
                continue
            system, history = line[len("/system"):].strip(), []
            print(f"(sistema: {system or 'ninguno'}; conversación nueva)", flush=True)
        elif why := prompt_problem(line):
            print(f"[error] {why}", flush=True)
        else:
            history.append((line, answer(line, history, one_line=True).strip()))
elif ckpt["kind"] == "instr":
    if prompt:
        questions = [prompt]
    else:
        if sys.stdin.isatty():
            print("type a question per line (Ctrl-D to end)", file=sys.stderr)
        questions = [line for line in sys.stdin if line.strip()]
        if not questions:
            fail("no --prompt given and nothing on stdin")
    refused = 0
    for q in questions:  # each answered alone (num_samples times); one that cannot be asked is said, and skipped
        q = clean_text(q).strip()
        if why := prompt_problem(q):
            if len(questions) == 1:
                fail(why)
            print(f"[error] {why}", flush=True)
            refused += 1
            continue
        for _ in range(num_samples):
            answer(q)
    if refused:
        fail(f"{refused} of {len(questions)} questions could not be asked (the [error] lines)")
else:
    if prompt or chat or system:
        fail(f"{out_dir} holds a pretrained model, which continues text: use --start=... "
             f"(--prompt, --chat and --system need an instruction model, e.g. --out_dir=out-instr)")
    if start.startswith("FILE:"):
        try:
            with open(start[5:], encoding="utf-8") as f:
                start = f.read()
        except (OSError, UnicodeDecodeError) as e:
            fail(f"cannot read start file {start[5:]}: {type(e).__name__}")
    start = clean_text(start) or "\n"
    ids = torch.tensor([tok.encode(start)], dtype=torch.long, device=device)  # (1, T)
    for k in range(num_samples):
        print(start, end="", flush=True)
        dec = StreamDecoder(tok)
        for t in model.generate_stream(ids, max_new_tokens, temperature=temp, top_k=top_k,
                                       use_cache=use_cache, generator=gen):
            print(dec.add(t.item()), end="", flush=True)
        print(dec.flush() + "\n---------------")
