"""
Instruction tuning: teach the pretrained GPT to answer prompts, then measure it on prompts it
never saw.

    python finetune_instr.py config/finetune_instr.py                  # pretrained/es-bpe2048-4x128 -> out-instr/, then evaluate
    python finetune_instr.py --eval_only=True --out_dir=out-instr       # evaluate on the held-out file
    python finetune_instr.py config/finetune_instr.py --init_from=scratch --out_dir=out-instr-scratch   # the control

Each example goes through the chat template (tokenizer.encode_chat; special ids inserted by code):

    [<sys> system] [<instr> q1 <resp> a1 <eos> ...] <instr> prompt <resp> response <eos>

The loss is taken only on the last response and <eos>: the model learns to answer, not to write
questions. Data (--data, several files comma-separated): JSONL with {"prompt", "response"}
(optionally "kind", and for a conversation "history": [[question, answer], ...] and "system"),
or the Alpaca format ({"instruction", "input", "output"}) as JSON or JSONL.
"""
import copy
import json
import os
import random
import time

import torch

from checkpoint import (CheckpointError, Staged, adamw, atomic_write_text, autocast, grad_scaler, load_checkpoint,
                        lr_schedule, model_from_checkpoint, pad_batch, pick_device, prepare_out_dir, save_checkpoint,
                        scaled_step, update_average)
import configurator
from configurator import catch_stop_signals, configure, fail, stop_exit_code
from evaluate import ExamplesError, answer_all, load_examples, print_table
from model import GPT, GPTConfig
from tokenizer import BASE_CHARS, CharTokenizer, instruction_example, load_tokenizer, noisy_prompt

# -----------------------------------------------------------------------------
init_from = "out"  # a pretrained out dir, or 'scratch' (random weights: shows what pretraining buys)
data = "data/es/instructions/train.jsonl"  # one or more files, comma-separated
test_data = "data/es/instructions/test.jsonl"  # the same; '' = no evaluation
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
augment_prob = 0.3  # chance of each prompt noise (case, no accents, no ¿?, a typo); 0 = off
wrap_prob = 0.0  # chance of wrapping a prompt in Spanish small talk that asks nothing ("Hola. ... Gracias."); 0 = off
bucket = True  # batches of similar length (a batch is padded to its longest example); False = plain shuffle
max_new_tokens = 120  # answer length limit when evaluating
# init_from='scratch' (the control: no pretraining): arch_from's architecture and tokenizer with random
# weights; without arch_from, a character model of GPTConfig's defaults with these sizes, its vocabulary
# read from the examples
arch_from = ""
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


# -----------------------------------------------------------------------------
ckpt_path = os.path.join(out_dir, "ckpt.pt")


def read_examples(paths):
    try:
        return [e for path in paths.split(",") if path.strip() for e in load_examples(path.strip())]
    except ExamplesError as e:
        fail(e)


def evaluate_checkpoint():
    """Greedy answers of out_dir's checkpoint on test_data: a table, and every answer in a JSONL. Without
    --test_data, --eval_only scores the held-out data of the checkpoint's own run."""
    global test_data
    try:
        ckpt = load_checkpoint(out_dir, kinds=("instr",))
        model, tok = model_from_checkpoint(ckpt, device)
    except CheckpointError as e:
        fail(e)
    trained_on = ckpt.get("config", {}).get("test_data")
    if eval_only and "test_data" not in configurator.given and trained_on and trained_on != test_data:
        print(f"--eval_only: the held-out data of the checkpoint's run, {trained_on} (--test_data=... for others)")
        test_data = trained_on
    examples = read_examples(test_data)
    if not examples:
        fail(f"no test examples to evaluate (--test_data='{test_data}')")
    try:
        prepare_out_dir(out_dir)  # eval_answers.jsonl goes there: say so now, not after the whole evaluation
    except CheckpointError as e:
        fail(e)
    t0 = time.time()
    results = answer_all(model, tok, examples, max_new_tokens, ctx)
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
# over an existing checkpoint (--overwrite=True) the run saves beside it and moves its best into place only
# when training ends: a run that fails halfway (a NaN loss) leaves the earlier model whole
run_files = Staged(out_dir, ["ckpt.pt"])
examples = read_examples(data)
if len(examples) < 2:  # one for training and one held out: without val there is no best checkpoint to keep
    fail(f"{data} holds {len(examples)} example(s): instruction tuning needs at least 2 (a tenth, at least one, "
         f"is held out for validation)")
if init_from == "scratch" and not arch_from:
    texts = [e.prompt + e.response + e.system + "".join(q + a for q, a in e.history) for e in examples] + [BASE_CHARS]
    tok = CharTokenizer.from_texts(texts)
    model_args = dict(vocab_size=len(tok), block_size=block_size, n_layer=n_layer, n_head=n_head,
                      n_embd=n_embd, dropout=dropout)
    model = GPT(GPTConfig(**model_args))
    pretrain_history = []
else:  # a pretrained backbone, or (scratch) arch_from's network and tokenizer with random weights
    scratch = init_from == "scratch"
    try:
        base = load_checkpoint(arch_from if scratch else init_from, kinds=("pretrain", "instr"), quantized=False)
        model_args = {**base["model_args"], "dropout": dropout}
        model, tok = ((GPT(GPTConfig(**model_args)), load_tokenizer(base)) if scratch
                      else model_from_checkpoint(base, "cpu", dropout=dropout))
    except (CheckpointError, TypeError, ValueError) as e:
        fail(f"--arch_from={arch_from}: {e}" if scratch else e)
    pretrain_history = [] if scratch else base.get("history", [])
model.to(device).train()
block = model.config.block_size
try:  # an out_dir that cannot be written fails now, before any training
    prepare_out_dir(out_dir)
except CheckpointError as e:
    fail(e)


def encode(e, prompt=None):
    """(x, y, cut) of one example (its prompt replaced by `prompt` if given): the loss mask covers
    the last response and <eos> only (tokenizer.py)."""
    try:
        return instruction_example(tok, prompt or e.prompt, e.response, block + 1, e.history, e.system)
    except ValueError as err:  # a system prompt for a vocabulary without <sys>
        fail(f"{init_from}: {err}")


aug_rng = random.Random(seed)


def augment(p):
    """A training prompt as people might type it (tokenizer.noisy_prompt: odd capitals, no accents, no
    ¿?, a typo, small talk around it): each step sees a different variant, so the model learns what a
    question asks, not its spelling."""
    return noisy_prompt(p, aug_rng, augment_prob, wrap_prob)


as_written = [encode(e) for e in examples]  # (x, y, cut) of every example, its prompt as written
truncated = sum(cut > 0 for _, _, cut in as_written)
if truncated:
    print(f"{truncated} example(s) longer than block_size={block}: prompts truncated from the left")
long_answers = sum(y[-1] != tok.eos_id for _, y, _ in as_written)  # the response alone did not fit the window
if long_answers:
    print(f"{long_answers} response(s) longer than block_size={block} alone: cut at their end, without <eos> "
          f"(the model cannot learn where they stop)")
# characters the backbone's vocabulary lacks (a character model pretrained on other text) read as <unk>:
# the model can neither see them in a prompt nor write them in an answer (it writes <unk>, shown as �)
with_unk = sum(tok.unk_id in x for x, _, _ in as_written)
if with_unk:
    texts = (e.system + e.prompt + e.response + "".join(q + a for q, a in e.history) for e in examples)
    missing = sorted({ch for t in texts for ch in t if tok.encode(ch) == [tok.unk_id]})
    print(f"note: {with_unk} of {len(examples)} examples hold characters {init_from}'s vocabulary lacks, read as "
          f"<unk>: {' '.join(missing[:20])}{' …' if len(missing) > 20 else ''}")
order = list(range(len(examples)))
random.Random(seed).shuffle(order)
n_val = max(1, int(len(order) * val_fraction)) if len(order) > 1 else 0
# validation: the prompts as written, shortest first, so that each batch of the val loss pads to a
# similar length (the loss is a sum over examples: their order does not change it)
val_set = sorted((as_written[i][:2] for i in order[:n_val]), key=lambda xy: len(xy[0]))
train_set = [examples[i] for i in order[n_val:]]
lengths = [len(as_written[i][0]) for i in order[n_val:]]  # of train_set, for bucket=True
print(f"{len(train_set)} training / {len(val_set)} validation examples; {model.num_params():,} parameters")
if wrap_prob > 0:  # tokenizer.OPENERS/CLOSERS are Spanish: other data wants --wrap_prob=0
    print(f"prompts wrapped in Spanish small talk {wrap_prob:.0%} of the time (--wrap_prob=0 for data in another language)")


def collate(batch):
    """Pad a batch to its own longest example: inputs with <pad>, targets with -100 (ignored)."""
    X = pad_batch([x for x, _ in batch], tok.pad_id)  # (B, T)
    Y = pad_batch([y for _, y in batch], -100)  # (B, T)
    return X.to(device), Y.to(device)


# the weights we evaluate and save: the model itself, or a moving average of its recent weights
avg_model = copy.deepcopy(model).eval() if ema > 0 else model


@torch.no_grad()
def val_loss():
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
                         **tok.state(), "config": config, "iter_num": it, "best_val_loss": best,
                         "history": history, "pretrain_history": pretrain_history, "base": init_from},
                        run_files["ckpt.pt"])
    except CheckpointError as e:
        give_up(e)


def give_up(msg):  # this run's own file goes; an earlier checkpoint stays as it was
    run_files.discard()
    fail(msg)


optimizer = adamw(model.parameters(), weight_decay, learning_rate, (0.9, 0.99), device.split(":")[0])
gen = torch.Generator().manual_seed(seed)
def shuffled_pass():
    """The training set in a random order. With bucket=True the order is made of batches of similar
    length: each run of 16 batches' worth of examples is sorted by length and cut into batches, and the
    batches are shuffled. A batch is padded to its longest example, so one 150-token conversation among
    32 short questions would make the step pay for 32 x 150 tokens: on the shipped data (mean 50
    tokens, a random batch's longest ~140) this makes a step ~2x cheaper."""
    order = torch.randperm(len(train_set), generator=gen).tolist()
    if not bucket:
        return order
    run = batch_size * 16
    batches = [part[j:j + batch_size] for s in range(0, len(order), run)
               for part in [sorted(order[s:s + run], key=lengths.__getitem__)] for j in range(0, len(part), batch_size)]
    return [i for b in torch.randperm(len(batches), generator=gen).tolist() for i in batches[b]]


history, best, bad_evals, perm = [], float("inf"), 0, []
stop = catch_stop_signals()  # Ctrl-C / kill: finish the step, evaluate and save, then stop (as train.py does)
t0 = time.time()
for it in range(max_iters + 1):
    if it % eval_interval == 0 or it == max_iters or stop["signal"]:
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
    if it == max_iters or stop["signal"]:
        break
    lr = lr_schedule(it, learning_rate, min_lr, warmup_iters, max_iters)  # warmup, then cosine
    for group in optimizer.param_groups:
        group["lr"] = lr
    if len(perm) < batch_size:  # a fresh shuffled pass over the training set
        perm += shuffled_pass()
    X, Y = collate([encode(e, augment(e.prompt))[:2] for e in (train_set[i] for i in perm[:batch_size])])
    perm = perm[batch_size:]
    with ctx:
        _, loss = model(X, Y)
    if not torch.isfinite(loss):
        give_up(f"loss became {loss.item()} at iteration {it}; stopped (the best checkpoint so far is kept)")
    scaler.scale(loss).backward()  # (a no-op scale unless float16)
    scaled_step([optimizer], scaler, grad_clip)  # unscale, clip, step, clear (checkpoint.py)
    if avg_model is not model:
        update_average(avg_model, model, ema)  # (checkpoint.py)
    history.append({"iter": it + 1, "loss": loss.item(), "lr": lr})
try:
    run_files.commit()
except CheckpointError as e:
    give_up(e)
print(f"finetuned in {time.time() - t0:.1f}s; best val loss {best:.4f} -> {ckpt_path}")
if stop["signal"]:
    print("stopped by a signal: the best checkpoint so far is saved; no held-out evaluation")
    raise SystemExit(stop_exit_code(stop))

# evaluate the best checkpoint on the held-out prompts
if test_data:
    evaluate_checkpoint()
