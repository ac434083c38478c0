"""
Instruction tuning: teach the pretrained GPT to answer prompts, then measure it on prompts it
never saw.

    python finetune_instr.py config/finetune_instr.py                  # out/ -> out-instr/, then evaluate
    python finetune_instr.py --eval_only=True --out_dir=out-instr       # evaluate on the held-out file
    python finetune_instr.py --init_from=scratch --out_dir=out-instr-scratch   # the control

Each example becomes   <instr> prompt <resp> response <eos>   (special ids inserted by code).
The loss is taken only on the response and <eos>: the model learns to answer, not to write
questions. Data: JSONL with {"prompt", "response"} (optionally "kind"), or the Alpaca format
({"instruction", "input", "output"}) as JSON or JSONL.
"""
import copy
import json
import os
import random
import time

import torch

from checkpoint import (CheckpointError, atomic_write_text, autocast, grad_scaler, load_checkpoint,
                        model_from_checkpoint, pick_device, prepare_out_dir, save_checkpoint, scaled_step)
from configurator import configure, fail
from model import GPT, GPTConfig, lr_schedule, pad_batch, prompt_ids
from tokenizer import BASE_CHARS, CharTokenizer, clean_text, instruction_example, strip_accents

# -----------------------------------------------------------------------------
init_from = "out"  # a pretrained out dir, or 'scratch' (random weights: shows what pretraining buys)
data = "data/es/instructions/train.jsonl"
test_data = "data/es/instructions/test.jsonl"
out_dir = "out-instr"
overwrite = False  # allow replacing a checkpoint already in out_dir
eval_only = False  # skip training: evaluate out_dir's checkpoint on test_data
val_fraction = 0.1  # held out from `data` for early stopping
batch_size = 32
max_iters = 900
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 30
weight_decay = 0.1
grad_clip = 1.0
dropout = 0.0  # no dropout: the prompt noise and the weight average regularize, and steps are ~1.8x faster on CPU
eval_interval = 50
patience = 6  # stop after this many evaluations without a better val loss
ema = 0.99  # evaluate and save a moving average of the weights (0 = the last step's weights): it answers
# new paraphrases better than any single step (see README)
augment_prob = 0.3  # chance of each prompt noise (lowercase, no accents, no ¿?, a typo); 0 = off
max_new_tokens = 120  # answer length limit when evaluating
# architecture for init_from='scratch' (a pretrained init brings its own): config/pretrain_char.py's
block_size = 256
n_layer = 4
n_head = 4
n_embd = 128
device = "auto"
dtype = "auto"
seed = 1337
# -----------------------------------------------------------------------------
config = configure(globals())
if not 0 <= ema < 1:
    fail(f"--ema must be in [0, 1) (0 = no average), got {ema}")
try:
    device = pick_device(device)
    ctx = autocast(device, dtype)
    scaler = grad_scaler(device, dtype)  # float16 only: loss scaling against underflow
except ValueError as e:
    fail(e)
torch.manual_seed(seed)


def load_examples(path):
    """[(prompt, response, kind)] from JSONL or JSON; bad lines are all reported, then we stop."""
    if not os.path.isfile(path):
        fail(f"instruction data not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text")
    if not text.strip():
        fail(f"{path} is empty")
    if text.lstrip().startswith("["):  # a JSON list (Alpaca's own format)
        try:
            items = list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as e:
            fail(f"{path}: not valid JSON ({e.msg} at line {e.lineno})")
        where = "item"
    else:
        items, where = [], "line"
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((n, json.loads(line)))
                except json.JSONDecodeError:
                    items.append((n, None))
    examples, bad = [], []
    for n, obj in items:
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
            prompt, response = obj["prompt"], obj["response"]
        elif isinstance(obj, dict) and isinstance(obj.get("instruction"), str) and isinstance(obj.get("output"), str):
            prompt, response = obj["instruction"], obj["output"]
            if isinstance(obj.get("input"), str) and obj["input"].strip():
                prompt += "\n" + obj["input"]  # Alpaca's optional context goes under the instruction
        else:
            bad.append(n)
            continue
        examples.append((clean_text(prompt).strip(), clean_text(response).strip(), str(obj.get("kind", ""))))
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        fail(f"{path}: {len(bad)} malformed {where}(s) (need prompt/response or instruction/output): {where} {shown}")
    if not examples:
        fail(f"{path} holds no examples")
    return examples


# the three seed facts and the key words a correct answer must contain (accents ignored)
FACT_KEYS = {"fact:perro": ["canino", "canido", "canidae"], "fact:gato": ["felino", "felido", "felidae"],
             "fact:capital": ["san jose"]}


def is_correct(kind, answer, expected):
    a = strip_accents(answer.lower())
    hits = {k for k, words in FACT_KEYS.items() if any(w in a for w in words)}
    if kind in FACT_KEYS:  # its own key words, and none of the other facts'
        return hits == {kind}
    if kind == "abstain":
        return "no lo se" in a and not hits
    return a.strip() == strip_accents(expected.lower()).strip()  # other facts: the exact answer


@torch.no_grad()
def evaluate(model, tok, examples):
    """Greedy answers for every prompt; prompts of equal length share a batch (no padding needed,
    so each answer is exactly what a single-prompt run would give)."""
    model.eval()
    encoded = [prompt_ids(tok, p, block, max_new_tokens)[0] for p, _, _ in examples]
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
    results = []
    for (p, r, kind), ans in zip(examples, answers):
        results.append({"prompt": p, "expected": r, "answer": ans, "kind": kind, "correct": is_correct(kind, ans, r)})
    return results


def print_table(results):
    kinds = sorted({r["kind"] for r in results}, key=lambda k: (k == "abstain", k))
    print(f"{'kind':<16}{'n':>5}{'correct':>9}{'accuracy':>10}")
    rows = [(k, [r for r in results if r["kind"] == k]) for k in kinds]
    facts = [r for r in results if r["kind"] in FACT_KEYS]
    if facts:
        rows.append(("facts (3)", facts))
    rows.append(("overall", results))
    for name, rs in rows:
        c = sum(r["correct"] for r in rs)
        print(f"{name:<16}{len(rs):>5}{c:>9}{100 * c / len(rs):>9.1f}%")


# -----------------------------------------------------------------------------
ckpt_path = os.path.join(out_dir, "ckpt.pt")


def evaluate_checkpoint():
    """Greedy answers of out_dir's checkpoint on test_data: a table, and every answer in a JSONL."""
    global block
    try:
        model, tok = model_from_checkpoint(load_checkpoint(out_dir, kinds=("instr",)), device)
    except CheckpointError as e:
        fail(e)
    block = model.config.block_size
    t0 = time.time()
    results = evaluate(model, tok, load_examples(test_data))
    print(f"held-out evaluation of {ckpt_path} on {test_data} ({time.time() - t0:.1f}s, greedy, model only):")
    print_table(results)
    answers_path = os.path.join(out_dir, "eval_answers.jsonl")
    try:
        atomic_write_text(answers_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    except CheckpointError as e:
        fail(e)
    print(f"answers written to {answers_path}")


if eval_only:
    evaluate_checkpoint()
    raise SystemExit(0)

if os.path.exists(ckpt_path) and not overwrite:
    fail(f"{ckpt_path} already exists; use --overwrite=True to replace it, or another --out_dir")
examples = load_examples(data)
if init_from == "scratch":
    texts = [p + r for p, r, _ in examples] + [BASE_CHARS]
    tok = CharTokenizer.from_texts(texts)
    model_args = dict(vocab_size=len(tok), block_size=block_size, n_layer=n_layer, n_head=n_head,
                      n_embd=n_embd, dropout=dropout)
    model = GPT(GPTConfig(**model_args))
    pretrain_history = []
else:
    try:
        base = load_checkpoint(init_from, kinds=("pretrain", "instr"))
        model, tok = model_from_checkpoint(base, "cpu", dropout=dropout)
    except CheckpointError as e:
        fail(e)
    model_args = {**base["model_args"], "dropout": dropout}
    pretrain_history = base.get("history", [])
model.to(device).train()
block = model.config.block_size
try:  # an out_dir that cannot be written fails now, before any training
    prepare_out_dir(out_dir)
except CheckpointError as e:
    fail(e)


def encode(p, r):
    """(x, y, cut) of one example: the loss mask covers the response and <eos> only (tokenizer.py)."""
    return instruction_example(tok, p, r, max_len=block + 1)


aug_rng = random.Random(seed)


def augment(p):
    """Noise people put in real questions: no capitals, no accents, no ¿?, a typo. Each training
    step sees a different variant, so the model learns what a question asks, not its spelling."""
    if aug_rng.random() < augment_prob:
        p = p.lower()
    if aug_rng.random() < augment_prob:
        p = strip_accents(p)
    if aug_rng.random() < augment_prob:
        p = p.replace("¿", "").replace("¡", "").replace("?", "" if aug_rng.random() < 0.5 else "?")
    if aug_rng.random() < augment_prob and len(p) > 3:  # one typo: drop, double or swap a letter
        i, op = aug_rng.randrange(len(p) - 1), aug_rng.randrange(3)
        p = p[:i] + p[i + 1:] if op == 0 else p[:i] + p[i] + p[i:] if op == 1 else p[:i] + p[i + 1] + p[i] + p[i + 2:]
    return p


truncated = sum(encode(p, r)[2] > 0 for p, r, _ in examples)
if truncated:
    print(f"{truncated} example(s) longer than block_size={block}: prompts truncated from the left")
order = list(range(len(examples)))
random.Random(seed).shuffle(order)
n_val = max(1, int(len(order) * val_fraction)) if len(order) > 1 else 0
val_set = [encode(*examples[i][:2])[:2] for i in order[:n_val]]  # validation: the prompts as written
train_set = [examples[i][:2] for i in order[n_val:]]
print(f"{len(train_set)} training / {len(val_set)} validation examples; {model.num_params():,} parameters")


def collate(batch):
    """Pad a batch to its own longest example: inputs with <pad>, targets with -100 (ignored)."""
    X = pad_batch([x for x, _ in batch], tok.pad_id)  # (B, T)
    Y = pad_batch([y for _, y in batch], -100)  # (B, T)
    return X.to(device), Y.to(device)


# the weights we evaluate and save: the model itself, or a moving average of its recent weights
avg_model = copy.deepcopy(model).eval() if ema > 0 else model


@torch.no_grad()
def val_loss():
    if not val_set:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(val_set), batch_size):
        X, Y = collate(val_set[s:s + batch_size])
        with ctx:
            _, loss = avg_model(X, Y)
        n = (Y != -100).sum().item()
        total, count = total + loss.item() * n, count + n
    model.train()
    return total / count


def save():
    try:
        save_checkpoint({"kind": "instr", "model_args": model_args, "model": avg_model.state_dict(),
                         "vocab": tok.vocab, "config": config, "iter_num": it, "best_val_loss": best,
                         "history": history, "pretrain_history": pretrain_history, "base": init_from}, ckpt_path)
    except CheckpointError as e:
        fail(e)


optimizer = model.configure_optimizer(weight_decay, learning_rate, (0.9, 0.99), device.split(":")[0])
gen = torch.Generator().manual_seed(seed)
history, best, bad_evals, perm = [], float("inf"), 0, []
t0 = time.time()
for it in range(max_iters + 1):
    if it % eval_interval == 0 or it == max_iters:
        vl = val_loss() if val_set else float("nan")
        history.append({"iter": it, "val_loss": vl, "elapsed_s": round(time.time() - t0, 2)})
        print(f"iter {it}/{max_iters} | val loss {vl:.4f} | {time.time() - t0:.0f}s", flush=True)
        if not val_set or vl < best:
            best, bad_evals = min(best, vl), 0
            save()
        else:
            bad_evals += 1
            if bad_evals >= patience:
                print(f"early stop: no better val loss in {patience} evaluations")
                break
    if it == max_iters:
        break
    lr = lr_schedule(it, learning_rate, min_lr, warmup_iters, max_iters)  # warmup, then cosine
    for group in optimizer.param_groups:
        group["lr"] = lr
    if len(perm) < batch_size:  # a fresh shuffled pass over the training set
        perm += torch.randperm(len(train_set), generator=gen).tolist()
    X, Y = collate([encode(augment(p), r)[:2] for p, r in (train_set[i] for i in perm[:batch_size])])
    perm = perm[batch_size:]
    with ctx:
        _, loss = model(X, Y)
    if not torch.isfinite(loss):
        fail(f"loss became {loss.item()} at iteration {it}; stopped (the best checkpoint so far is kept)")
    scaler.scale(loss).backward()  # (a no-op scale unless float16)
    scaled_step([optimizer], scaler, grad_clip)  # unscale, clip, step, clear (checkpoint.py)
    if avg_model is not model:
        with torch.no_grad():
            for pa, pm in zip(avg_model.parameters(), model.parameters()):
                pa.lerp_(pm, 1 - ema)  # avg = ema * avg + (1 - ema) * current
    history.append({"iter": it + 1, "loss": loss.item(), "lr": lr})
print(f"finetuned in {time.time() - t0:.1f}s; best val loss {best:.4f} -> {ckpt_path}")

# evaluate the best checkpoint on the held-out prompts
if test_data:
    evaluate_checkpoint()
