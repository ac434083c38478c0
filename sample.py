"""
Sample from a trained model, streaming to the terminal.

    python sample.py                                          # free text from out/
    python sample.py --start="La capital de" --num_samples=3 --max_new_tokens=200
    python sample.py --start=FILE:prompt.txt
    python sample.py --out_dir=out-instr --prompt="¿Los perros son caninos?"   # one answer
    echo "¿Cuál es la capital de Costa Rica?" | python sample.py --out_dir=out-instr   # one per line

An instruction checkpoint (finetune_instr.py) answers prompts; a pretrained one continues text.
"""
import sys

import torch

from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, pick_device
from configurator import configure, fail
from model import answer_ids, prompt_ids
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
use_cache = True  # KV cache on (the fast path); off recomputes the whole context every token
show_raw = False  # instruction mode: also print the raw trace with <instr>/<resp>/<eos> visible
max_prompt_chars = 500
# -----------------------------------------------------------------------------
configure(globals())

try:
    device = pick_device(device)
    ckpt = load_checkpoint(out_dir, kinds=("pretrain", "instr"))
    model, tok = model_from_checkpoint(ckpt, device)
except (ValueError, CheckpointError) as e:
    fail(e)
torch.manual_seed(seed)
gen = torch.Generator(device=device).manual_seed(seed)
if ckpt["kind"] == "instr":
    temp = 0.0 if temperature < 0 else temperature
else:
    temp = 0.8 if temperature < 0 else temperature


def clean_prompt(text):
    text = clean_text(text).strip()
    if not text:
        fail("empty prompt")
    if len(text) > max_prompt_chars:
        fail(f"prompt of {len(text)} characters is longer than max_prompt_chars={max_prompt_chars}")
    return text


if ckpt["kind"] == "instr":
    if prompt:
        questions = [prompt]
    else:
        if sys.stdin.isatty():
            print("type a question per line (Ctrl-D to end)", file=sys.stderr)
        questions = [line for line in sys.stdin if line.strip()]
        if not questions:
            fail("no --prompt given and nothing on stdin")
    for q in questions:
        q = clean_prompt(q)
        new, dec = [], StreamDecoder(tok)  # holds a character's bytes until BPE has written all of them
        for i in answer_ids(model, tok, q, max_new_tokens, temp, top_k, gen):
            new.append(i)
            print(dec.add(i), end="", flush=True)  # <eos> and the other specials print nothing
        print(dec.flush())
        if show_raw:  # what the model read and wrote, from its ids: <instr> prompt <resp> answer [<eos>]
            ids, _ = prompt_ids(tok, q, model.config.block_size, max_new_tokens)
            print("[raw] " + tok.decode(ids + new, specials=True))
else:
    if prompt:
        fail(f"{out_dir} holds a pretrained model, which continues text: use --start=... "
             f"(--prompt needs an instruction model, e.g. --out_dir=out-instr)")
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
