"""
The evaluation suite: how well checkpoints predict text, side by side, and how instruction models
answer held-out prompts.

    python evaluate.py --out_dir=out --text=data/es/heldout/pg13507.txt   # a book the model never saw
    python evaluate.py --out_dir=out,out-topic --data=es,es_topic --text=a.txt,b.txt
    python evaluate.py --out_dir=out --json=True                          # the same rows as JSON
    python evaluate.py --out_dir=out-instr --instructions=data/es/instructions/test.jsonl

Text is scored in bits per byte: total nats / (ln 2 x UTF-8 bytes of the text scored). Unlike loss
per token it does not depend on the tokenizer, so a character model and a BPE model compare on the
same text. Each token after the first window is predicted with at least block_size/2 tokens of context
(windows overlap by half), and the text is preceded by a blank line, as every document was in training, so that every
one of its tokens is scored. Sources: --data names prepared datasets (their val split, decoded and
re-encoded with each checkpoint's own tokenizer; default: the dataset the checkpoint trained on),
--text files are read and cleaned exactly as prepare.py reads them (encodings, Gutenberg markers).

For an instruction checkpoint, --instructions (our JSONL or Alpaca JSON/JSONL) gives: bits per byte
of the expected responses given the prompts, the exact-match rate of the greedy answers after
normalization (case, accents, punctuation, spaces), a per-kind table when the file has "kind", and a
few answers next to the expected ones.

finetune_instr.py imports the instruction pieces from here (load_examples, answer_all, print_table).
"""
import json as jsonlib
import math
import os
import re
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from chat import prompt_ids
from checkpoint import CheckpointError, autocast, load_checkpoint, model_from_checkpoint, pick_device, windows
from configurator import configure, fail, json_lines
from corpus import CorpusError, read_text
from tokenizer import StreamDecoder, clean_text, instruction_example, load_tokenizer, strip_accents

# -----------------------------------------------------------------------------
out_dir = "out"  # one or more checkpoints, comma-separated
data = ""  # prepared datasets whose val split is scored, comma-separated; '' = a pretrain checkpoint's own
# when no --text or --instructions is given
text = ""  # text files (.txt/.jsonl/.parquet, any encoding, Gutenberg markers stripped), comma-separated
instructions = ""  # an instruction file (JSONL/JSON, ours or Alpaca) for instruction checkpoints
max_examples = 200  # greedy answers for the first N examples (bits per byte uses all of them)
max_new_tokens = 120
max_chars = 0  # score at most this many characters of each text source; 0 = all
encoding = "auto"  # of the --text files: auto (as prepare.py) or a codec name
strip_gutenberg = True
json = False  # print the rows as JSON (bits_per_byte, nats_per_token, ...) instead of a table
device = "auto"
dtype = "auto"
data_root = "data"
# -----------------------------------------------------------------------------
configure(globals(), None if __name__ == "__main__" else [])  # imported (finetune_instr): the defaults

# the three seed facts and the key words a correct answer must contain (accents ignored)
FACT_KEYS = {"fact:perro": ["canino", "canido", "canidae"], "fact:gato": ["felino", "felido", "felidae"],
             "fact:capital": ["san jose"]}


class ExamplesError(ValueError):
    """An instruction file that cannot be used (one clear message)."""


class Example(NamedTuple):
    """One instruction example: the question and its answer, with the conversation before it."""
    prompt: str
    response: str
    kind: str = ""
    history: tuple = ()  # earlier (question, answer) turns, oldest first
    system: str = ""  # the system prompt ('' = none)


def conversation(obj):
    """(history, system) of a JSONL object, or None if they are malformed."""
    hist, system = obj.get("history", []), obj.get("system", "")
    if not isinstance(system, str) or not isinstance(hist, list) or not all(
            isinstance(t, list) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in hist):
        return None
    return tuple((clean_text(q).strip(), clean_text(a).strip()) for q, a in hist), clean_text(system).strip()


def load_examples(path):
    """[Example] from JSONL or JSON (ours: prompt/response/kind, and for conversations history
    [[question, answer], ...] and system; Alpaca: instruction/input/output). Bad lines are all
    reported at once."""
    if not os.path.isfile(path):
        raise ExamplesError(f"instruction data not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExamplesError(f"{path} is not UTF-8 text")
    if not text.strip():
        raise ExamplesError(f"{path} is empty")
    if text.lstrip().startswith("["):  # a JSON list (Alpaca's own format)
        try:
            items = list(enumerate(jsonlib.loads(text), 1))
        except jsonlib.JSONDecodeError as e:
            raise ExamplesError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})")
        except (ValueError, RecursionError):  # a 5,000-digit number, [[[[...]]]]
            raise ExamplesError(f"{path}: not valid JSON")
        where = "item"
    else:
        items, where = list(json_lines(text)), "line"
        if len(items) > 1 and all(obj is None for _, obj in items):  # one pretty-printed object, not JSONL?
            try:
                whole = jsonlib.loads(text)
            except (ValueError, RecursionError):
                whole = None
            if isinstance(whole, dict):
                raise ExamplesError(f"{path} holds one JSON object over {len(items)} lines; expected a JSON list "
                                    f"of examples ([{{...}}, ...]) or JSONL (one example per line)")
    examples, bad = [], []
    for n, obj in items:
        context = conversation(obj) if isinstance(obj, dict) else None
        if context is None:
            bad.append(n)
            continue
        if isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
            prompt, response = obj["prompt"], obj["response"]
        elif isinstance(obj.get("instruction"), str) and isinstance(obj.get("output"), str):
            prompt, response = obj["instruction"], obj["output"]
            if isinstance(obj.get("input"), str) and obj["input"].strip():
                prompt += "\n" + obj["input"]  # Alpaca's optional context goes under the instruction
        else:
            bad.append(n)
            continue
        prompt, response = clean_text(prompt).strip(), clean_text(response).strip()
        if not prompt and not response:  # nothing to learn or to ask
            bad.append(n)
            continue
        examples.append(Example(prompt, response, str(obj.get("kind", "")), *context))
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ExamplesError(f"{path}: {len(bad)} malformed {where}(s) (need prompt/response or "
                            f"instruction/output; history a list of [question, answer], system a string): {where} {shown}")
    if not examples:
        raise ExamplesError(f"{path} holds no examples")
    return examples


def normalize(text):
    """For exact match: lower case, no accents, punctuation as spaces, single spaces."""
    return " ".join(re.sub(r"[^\w\s]", " ", strip_accents(text.lower())).split())


def is_correct(kind, answer, expected):
    """The shipped kinds are judged by key words (any wording that names the right fact, and no other
    fact, counts); everything else by exact match after normalization. A kind may carry a group
    before a slash (followup/fact:gato, context/abstain): the part after it is judged. Key words judge
    only answers whose expected text has them: another data set's "abstain" ("I don't know.") or
    "fact:perro" is matched exactly."""
    kind = kind.split("/")[-1]
    a, e = strip_accents(answer.lower()), strip_accents(expected.lower())
    hits = {k for k, words in FACT_KEYS.items() if any(w in a for w in words)}
    if kind in FACT_KEYS and any(w in e for w in FACT_KEYS[kind]):  # its own key words, none of the others'
        return hits == {kind}
    if kind == "abstain" and "no lo se" in e:
        return "no lo se" in a and not hits
    return normalize(answer) == normalize(expected)


@torch.no_grad()
def answer_all(model, tok, examples, max_new_tokens, ctx):
    """Greedy answers for every (prompt, response, kind); prompts of equal length share a batch (no
    padding needed, so each answer is exactly what a single-prompt run would give). Returns one dict
    per example with the answer and whether it is correct."""
    model.eval()
    device = model.wte.weight.device
    encoded = [prompt_ids(tok, e.prompt, model.config.block_size, max_new_tokens, e.history, e.system)[0]
               for e in examples]
    answers = [None] * len(examples)
    by_len = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    for length, rows in by_len.items():
        for s in range(0, len(rows), 64):
            chunk = rows[s:s + 64]
            idx = torch.tensor([encoded[i] for i in chunk], dtype=torch.long, device=device)  # (b, T)
            with ctx:
                out = model.generate(idx, max_new_tokens, temperature=0.0, stop_token=tok.eos_id)
            for i, row in zip(chunk, out[:, length:].tolist()):
                row = row[: row.index(tok.eos_id)] if tok.eos_id in row else row
                answers[i] = tok.decode(row)
    return [{"prompt": e.prompt, "expected": e.response, "answer": a, "kind": e.kind, "turns": len(e.history),
             "system": e.system, "correct": is_correct(e.kind, a, e.response),
             "exact": normalize(a) == normalize(e.response)} for e, a in zip(examples, answers)]


def print_table(results):
    """Correct answers per kind (facts, abstentions, others), the three facts together, and overall."""
    kinds = sorted({r["kind"] for r in results}, key=lambda k: (k == "abstain", k))
    print(f"{'kind':<26}{'n':>5}{'correct':>9}{'accuracy':>10}")
    rows = [(k or "(no kind)", [r for r in results if r["kind"] == k]) for k in kinds if kinds != [""]]  # else: overall
    facts = [r for r in results if r["kind"] in FACT_KEYS]
    if facts:
        rows.append(("facts (3)", facts))
    for group in sorted({r["kind"].split("/")[0] for r in results if "/" in r["kind"]}):
        rows.append((f"{group} (all)", [r for r in results if r["kind"].startswith(group + "/")]))
    rows.append(("overall", results))
    for name, rs in rows:
        c = sum(r["correct"] for r in rs)
        print(f"{name:<26}{len(rs):>5}{c:>9}{100 * c / len(rs):>9.1f}%")


@torch.no_grad()
def score(model, ids, first, ctx, batch_size=16):
    """Sum of -ln p(ids[t] | ids[:t]) over t >= first, and the count. Windows of block_size tokens
    advance by half a window, and each scores only its second half (its first window: everything from
    `first`), so every token but the earliest has at least block_size/2 tokens of context."""
    model.eval()
    if first >= len(ids):
        return 0.0, 0
    # the windows of the inputs ids[:-1] (checkpoint.windows), as (start, first scored target, end): inputs
    # ids[start:end-1] (at most block tokens), targets ids[start+1:end]; the first one scores from `first`
    spans = [(a, c + 1, b + 1) for a, b, c in windows(len(ids) - 1, model.config.block_size)]
    spans[0] = (0, first, spans[0][2])
    device = model.wte.weight.device
    data = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    total = 0.0
    by_len = {}
    for w in spans:
        by_len.setdefault(w[2] - 1 - w[0], []).append(w)
    for length, group in by_len.items():
        for s in range(0, len(group), batch_size):
            chunk = group[s:s + batch_size]
            x = torch.stack([data[a:e - 1] for a, _, e in chunk]).to(device)  # (b, T)
            y = torch.stack([data[a + 1:e] for a, _, e in chunk]).to(device)  # (b, T)
            with ctx:
                logits, _ = model(x)  # (b, T, V)
            nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (b, T)
            for row, (a, t0, e) in zip(nll, chunk):
                total += row[t0 - a - 1:].sum().item()  # only the targets from t0 on
    return total, len(ids) - first


def text_row(model, tok, text, ctx):
    """Bits per byte (and nats per token) of a text under a model; <unk> tokens are scored like any
    other (the model pays for not knowing a character) and their share is reported."""
    context = tok.encode("\n\n")  # every training document was preceded by a blank line
    ids = context + tok.encode(text)
    nats, n = score(model, ids, len(context), ctx)
    n_bytes = len(text.encode("utf-8"))
    unk = sum(i == tok.unk_id for i in ids[len(context):])
    return {"tokens": n, "bytes": n_bytes, "nats_per_token": nats / n, "bits_per_byte": nats / (math.log(2) * n_bytes),
            "unk_rate": unk / n}


def val_text(dataset, data_root="data", max_chars=0):
    """The val split of a prepared dataset as text (decoded with its own vocabulary)."""
    path = os.path.join(data_root, dataset)
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            meta = jsonlib.load(f)
        ids = np.fromfile(os.path.join(path, "val.bin"), dtype=np.dtype(meta.get("dtype", "uint16")))
        tok = load_tokenizer(meta)
    except (OSError, ValueError, KeyError, TypeError, re.error) as e:
        raise CorpusError(f"no usable prepared data in {path}/ ({type(e).__name__}; run prepare.py --dataset={dataset})")
    if max_chars:
        # enough ids for max_chars characters: a character is one char token, at most 4 byte tokens
        ids = ids[:max_chars * (4 if tok.kind == "bpe" else 1)]
    # decoded in bounded pieces; the stream decoder keeps a character whose bytes two pieces share whole
    dec = StreamDecoder(tok)
    text = "".join("".join(map(dec.add, ids[s:s + 1_000_000].tolist())) for s in range(0, len(ids), 1_000_000))
    text += dec.flush()
    return text[:max_chars] if max_chars else text


def instruction_row(d, model, tok, examples, ctx):
    """Bits per byte of the responses given the prompts (all examples), greedy answers of the first
    max_examples: exact match and the per-kind table, printed unless --json."""
    block = model.config.block_size
    nats = n_bytes = 0.0
    with_unk = 0  # examples holding characters the vocabulary lacks: the model can neither read nor write them
    for e in examples:  # teacher forcing: the response's tokens after the template's <resp>
        x, y, _ = instruction_example(tok, e.prompt, e.response, block + 1, e.history, e.system)
        with_unk += tok.unk_id in x
        with torch.no_grad(), ctx:
            logits, _ = model(torch.tensor([x], device=model.wte.weight.device))
        y = torch.tensor(y, device=logits.device)
        keep = (y != -100) & (y != tok.eos_id)  # the response's own tokens (not <eos>: it has no bytes)
        nats += F.cross_entropy(logits[0].float()[keep], y[keep], reduction="sum").item()
        n_bytes += len(tok.decode(y[keep].tolist()).encode("utf-8"))
    t0 = time.time()
    shown = examples[:max_examples] if max_examples else examples
    results = answer_all(model, tok, shown, max_new_tokens, ctx)
    exact = sum(r["exact"] for r in results)
    row = {"checkpoint": d, "source": instructions, "examples": len(examples),
           "bits_per_byte": nats / (math.log(2) * max(n_bytes, 1)), "answered": len(results),
           "exact_match": exact / len(results), "correct": sum(r["correct"] for r in results) / len(results),
           "examples_with_unk": with_unk,
           "by_kind": {k or "(no kind)": sum(r["correct"] for r in results if r["kind"] == k) /
                       sum(r["kind"] == k for r in results) for k in sorted({r["kind"] for r in results})}}
    if not json:
        print(f"{d} on {instructions}: {len(examples)} examples"
              + (f" ({with_unk} hold characters {d}'s vocabulary lacks, read as <unk>)" if with_unk else ""))
        print(f"  responses given the prompts: {row['bits_per_byte']:.4f} bits per byte (teacher forcing, all examples)")
        print(f"  greedy answers to the first {len(results)} ({time.time() - t0:.1f}s): exact match after "
              f"normalization {exact}/{len(results)} = {100 * row['exact_match']:.1f}%")
        print_table(results)
        for r in results[:3]:
            print(f"  prompt:   {r['prompt'][:100]!r}\n  expected: {r['expected'][:100]!r}\n  answer:   {r['answer'][:100]!r}")
    return row


if __name__ == "__main__":
    for name in ("max_chars", "max_examples", "max_new_tokens"):
        if globals()[name] < 0:
            fail(f"--{name} must be >= 0, got {globals()[name]}")
    try:
        device = pick_device(device)
        ctx = autocast(device, dtype)
    except ValueError as e:
        fail(e)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]
    # read everything first: a bad file fails before any model runs
    texts = {}
    for path in split(text):
        try:
            t, _ = read_text(path, encoding, strip_gutenberg)
        except CorpusError as e:
            fail(e)
        t = clean_text(t)
        if not t.strip():
            fail(f"{path} holds no text")
        texts[path] = t[:max_chars] if max_chars else t
    try:
        examples = load_examples(instructions) if instructions else None
    except ExamplesError as e:
        fail(e)
    ckpts = []
    for d in split(out_dir) or fail("--out_dir is empty"):
        try:
            ckpt = load_checkpoint(d, kinds=("pretrain", "instr", "cls"))
        except CheckpointError as e:
            fail(e)
        if ckpt["kind"] == "cls":
            fail(f"{d} holds a classifier; evaluate.py scores language models (use finetune_cls.py "
                 f"--eval_only=True --out_dir={d} for its test table)")
        if examples is not None and ckpt["kind"] != "instr":
            fail(f"{d} holds a '{ckpt['kind']}' model; --instructions needs an instruction checkpoint "
                 f"(finetune_instr.py)")
        ckpts.append((d, ckpt))

    rows, val_texts = [], {}
    for d, ckpt in ckpts:
        model, tok = model_from_checkpoint(ckpt, device)
        own = ckpt.get("config", {}).get("dataset") if ckpt["kind"] == "pretrain" else None
        for ds in split(data) or ([own] if own and not texts and examples is None else []):
            if ds not in val_texts:
                try:
                    val_texts[ds] = val_text(ds, data_root, max_chars)
                except CorpusError as e:
                    fail(e)
            rows.append({"checkpoint": d, "source": f"{ds} (val split)", **text_row(model, tok, val_texts[ds], ctx)})
        for path, t in texts.items():
            rows.append({"checkpoint": d, "source": path, **text_row(model, tok, t, ctx)})
        if examples is not None:
            rows.append(instruction_row(d, model, tok, examples, ctx))
    if not rows:
        fail("nothing to score: give --text=FILE, --data=DATASET or (instruction checkpoints) --instructions=FILE")
    if json:
        print(jsonlib.dumps(rows, ensure_ascii=False, indent=1))
        raise SystemExit(0)
    text_rows = [r for r in rows if "exact_match" not in r]
    if text_rows:
        w1 = max(len("checkpoint"), *(len(r["checkpoint"]) for r in text_rows)) + 2
        w2 = max(len("source"), *(len(r["source"]) for r in text_rows)) + 2
        print(f"{'checkpoint':<{w1}}{'source':<{w2}}{'tokens':>10}{'bytes':>11}{'nats/token':>12}"
              f"{'bits per byte':>15}{'<unk>':>8}")
        for r in text_rows:
            print(f"{r['checkpoint']:<{w1}}{r['source']:<{w2}}{r['tokens']:>10,}{r['bytes']:>11,}"
                  f"{r['nats_per_token']:>12.4f}{r['bits_per_byte']:>15.4f}{100 * r['unk_rate']:>7.2f}%")
        if any(r["unk_rate"] > 0 for r in text_rows):
            print("<unk>: share of tokens the checkpoint's vocabulary lacks (characters it never saw; scored "
                  "like any other token)")
