"""
Pretrain the GPT on data/<dataset>/ (made by prepare.py). nanoGPT-style: flat globals below,
overridden by config files and --key=value flags.

    python train.py config/pretrain_char.py
    python train.py config/pretrain_char.py --device=mps --max_iters=500
    python train.py config/pretrain_char.py --init_from=resume          # continue a run
    torchrun --standalone --nproc_per_node=2 train.py config/pretrain_char.py

Checkpoints (atomic, fsynced writes): out_dir/last.pt at every evaluation (what resume reads) and
out_dir/ckpt.pt whenever the val loss improves (what sample.py and the finetunes read). An
evaluation whose loss is not finite stops the run before anything is written.
out_dir/log.jsonl has one line per log/eval step for plots.

Randomness is derived, not stored: every micro-batch draws its sequences and dropout masks from a
seed made of (seed, iteration, micro-batch index across all ranks). So ranks never repeat each
other's batches, a resumed run continues exactly like an uninterrupted one, and 2 processes x 1
micro-batch see the very batches that 1 process x 2 micro-batches sees.
"""
import copy
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext

T_PROCESS = time.time()  # the run's clock for time_budget starts here, before torch is imported

import numpy as np
import torch

import configurator
from checkpoint import (CheckpointError, adamw, atomic_write_text, autocast, grad_scaler, load_checkpoint,
                        lr_schedule, model_from_checkpoint, param_groups, pick_device, prepare_out_dir, reason_of,
                        resolve_dtype, save_checkpoint, scaled_step, update_average)
from configurator import catch_stop_signals, configure, fail, stop_exit_code
from model import GPT, GPTConfig, missing_cpp_compiler
from tokenizer import load_tokenizer

# -----------------------------------------------------------------------------
# I/O
out_dir = "out"
dataset = "es"
data_root = "data"
init_from = "scratch"  # 'scratch' or 'resume' (from out_dir)
overwrite = False  # allow 'scratch' to replace a checkpoint already in out_dir
eval_interval = 250
eval_iters = 20
eval_train = True  # also estimate the train loss at each evaluation (False halves the cost of an eval)
log_interval = 10
# model
block_size = 256
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = True
use_sdpa = True  # attention kernel: fused F.scaled_dot_product_attention, or (False) the explicit math,
# faster in bf16 on CPU at block 256 (README "Performance"). A speed setting, not part of the checkpoint
pos = "learned"  # 'learned' or 'rope'
norm = "layernorm"  # 'layernorm' or 'rmsnorm'
mlp = "gelu"  # 'gelu' or 'relu2'
qk_norm = False
tie_weights = True
# optimizer (AdamW) and schedule (linear warmup, then cosine down to min_lr)
batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 1e-3
max_iters = 2000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
muon_lr = 0.0  # > 0: train the blocks' weight matrices with Muon at this learning rate (AdamW for the rest)
ema = 0.0  # > 0: evaluate and save a moving average of the weights (decay per step, e.g. 0.995), not the last step's
warmup_iters = 100
lr_decay_iters = 2000
min_lr = 1e-4
# system
device = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
dtype = "auto"  # auto (bf16 on capable GPUs, fp32 elsewhere), float32, bfloat16, float16
compile = False  # torch.compile the model
seed = 1337
max_seconds = 0.0  # stop (with a final eval + checkpoint) after this much training time; 0 = no limit
time_budget = 0.0  # > 0: the whole run's wall time in seconds (start-up and every evaluation included): the
# learning-rate schedule follows the clock (lr_decay_iters = the end of the budget) and the run stops so
# that its final evaluation ends within the budget. Single process only; not reproducible step for step
target_val_loss = 0.0  # stop at the first evaluation with val loss <= this (bench.py race); 0 = off
# -----------------------------------------------------------------------------
config = configure(globals(), torchrun=True)

# distributed data parallel: torchrun sets RANK/WORLD_SIZE; each rank takes a share of the
# gradient accumulation steps, so the global batch is the same as in a single process
ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # (a lone RANK from some launcher: one process)
try:
    device = pick_device(device)
except ValueError as e:
    fail(e)
if time_budget < 0 or (time_budget and ddp):
    fail(f"time_budget must be >= 0 seconds and is for a single process (each rank would follow its own "
         f"clock), got {time_budget}" + (" under torchrun" if ddp else ""))
if not 0 <= ema < 1:
    fail(f"ema must be >= 0 and < 1 (the average's decay per step, e.g. 0.995; 0 = off), got {ema}")
# the settings a run divides by, counts with, or hands to the optimizer: one line each when out of range
for key in ("batch_size", "gradient_accumulation_steps", "max_iters", "eval_interval", "eval_iters", "log_interval"):
    if globals()[key] < 1:
        fail(f"{key} must be >= 1, got {globals()[key]}")
if not (learning_rate > 0 and min_lr >= 0 and muon_lr >= 0 and weight_decay >= 0 and max_seconds >= 0):
    fail("learning_rate must be > 0; min_lr, muon_lr, weight_decay and max_seconds >= 0")
if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
    fail(f"beta1 and beta2 must be >= 0 and < 1, got {beta1} and {beta2}")
if not 0 <= seed < 2 ** 40:  # each micro-batch's seed is seed * 1_000_003 + k: it must fit in 64 bits
    fail(f"seed must be an integer from 0 to 2**40, got {seed}")
if ddp:
    from torch.distributed import destroy_process_group, init_process_group
    from torch.nn.parallel import DistributedDataParallel as DDP

    init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):  # one GPU per process: the one torchrun numbered for it on this machine
        gpu = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(gpu)
        device = f"cuda:{gpu}"
    if gradient_accumulation_steps % world:
        fail(f"gradient_accumulation_steps ({gradient_accumulation_steps}) must be divisible by the {world} processes")
    gradient_accumulation_steps //= world
else:
    rank, world = 0, 1
master = rank == 0  # only rank 0 evaluates, writes checkpoints and logs
device_type = device.split(":")[0]
try:
    ctx = autocast(device, dtype)
    scaler = grad_scaler(device, dtype)  # float16 only: scales the loss so small gradients do not underflow
except ValueError as e:
    fail(e)
if compile and device_type == "cpu" and (why := missing_cpp_compiler()):  # say so now, not at the first step
    fail(f"--compile=True: {why} (install one, or run with --compile=False)")

# data ------------------------------------------------------------------------
data_dir = os.path.join(data_root, dataset)
if not os.path.isfile(os.path.join(data_dir, "meta.json")):
    fail(f"no prepared data in {data_dir}/ (run: python prepare.py --dataset={dataset})")
try:
    with open(os.path.join(data_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    assert isinstance(meta, dict)
    tok = load_tokenizer(meta)  # characters or BPE merges, as prepare.py wrote them
    tok_state = tok.state()  # saved in every checkpoint, so sample/app need no data folder
    bin_dtype = np.dtype(meta.get("dtype", "uint16"))  # uint16 while the vocabulary fits, else uint32
    assert all(isinstance(v, str) for v in tok_state.get("vocab", [""])) and len(tok) > 5
except (ValueError, KeyError, TypeError, AssertionError, OSError, re.error):
    fail(f"{data_dir}/meta.json is damaged or not prepare.py's (run prepare.py again)")


def open_split(split):
    """The token file of a split, memory-mapped (never read whole), checked against meta.json."""
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        fail(f"{path} is missing (run prepare.py again)")
    if os.path.getsize(path) == 0:
        fail(f"{path} is empty: the corpus is too short to split (use more text)")
    if os.path.getsize(path) != meta.get(f"{split}_tokens", -1) * bin_dtype.itemsize:
        fail(f"{path} has {os.path.getsize(path)} bytes, but meta.json says {meta.get(f'{split}_tokens')} tokens "
             f"of {bin_dtype.itemsize} bytes: the files do not belong together (run prepare.py again)")
    data = np.memmap(path, dtype=bin_dtype, mode="r")
    top = max((int(data[i:i + (1 << 24)].max()) for i in range(0, len(data), 1 << 24)), default=0)
    if top >= len(tok):
        fail(f"{path} holds token id {top}, but the vocabulary has {len(tok)} entries (run prepare.py again)")
    return data


train_data, val_data = open_split("train"), open_split("val")
# a loss in nats per token, as bits per byte of text (what compares across tokenizers): x tokens per
# byte of the val split / ln 2. Approximate: the loss is a sample of windows, evaluate.py scores all
bits_per_nat_token = meta["val_tokens"] / max(1, meta.get("val_bytes", meta["val_tokens"])) / math.log(2)


def random_windows(data, gen):
    """batch_size random windows of block_size+1 tokens: x is the window, y the same shifted by one.
    A window may start at any i with i + block_size < len(data), so the split's last token is a target too."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=gen).tolist()
    windows = torch.from_numpy(np.stack([data[i:i + block_size + 1] for i in starts]).astype(np.int64))  # (B, T+1)
    return windows[:, :-1].contiguous().to(device), windows[:, 1:].contiguous().to(device)  # (B, T), (B, T)


# model -----------------------------------------------------------------------
model_args = dict(vocab_size=len(tok), block_size=block_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, dropout=dropout, bias=bias, pos=pos, norm=norm, mlp=mlp,
                  qk_norm=qk_norm, tie_weights=tie_weights)
ckpt_path, last_path = os.path.join(out_dir, "ckpt.pt"), os.path.join(out_dir, "last.pt")
iter_num, best_val_loss, history, resumed = 0, float("inf"), [], None
if init_from == "scratch":
    # last.pt alone is a run too (killed between its two writes at the first evaluation)
    if master and not overwrite and (os.path.exists(ckpt_path) or os.path.exists(last_path)):
        fail(f"{ckpt_path if os.path.exists(ckpt_path) else last_path} already exists; use --init_from=resume to "
             f"continue it, --overwrite=True to replace it, or another --out_dir")
elif init_from == "resume":
    try:
        resumed = load_checkpoint(last_path if os.path.exists(last_path) else ckpt_path, kinds=("pretrain",), quantized=False)
    except CheckpointError as e:
        fail(e)
    if "optimizer" not in resumed:
        fail(f"{out_dir} holds weights only (no optimizer state: exported by checkpoint.py, or a shipped backbone), "
             f"which cannot be resumed; start a run from scratch, or finetune it")
    ck_tok = load_tokenizer(resumed)
    # the same ids for the same text pieces is what resuming needs; BPE's pre-split pattern alone may differ
    # (prepare.py now caps very long runs of letters: the ids of every token stay what they were), and a
    # lowercased vocabulary from before the tokenizer recorded it has the same ids
    ids_of = lambda state: {k: v for k, v in state.items() if k not in ("pattern", "lowercase")}
    if ids_of(ck_tok.state()) != ids_of(tok_state):
        same_size = ck_tok.kind == tok.kind and len(ck_tok) == len(tok)
        fail(f"the checkpoint's tokenizer ({ck_tok.kind}, {len(ck_tok)} tokens) differs from {data_dir}'s "
             f"({tok.kind}, {len(tok)}{': the same size, other tokens' if same_size else ''}); resume with the data "
             f"it was trained on")
    if ck_tok.state().get("pattern") != tok_state.get("pattern") and master:
        print(f"note: {data_dir}'s BPE pre-split pattern differs from the checkpoint's (the same tokens and ids); "
              f"the data's is saved from here on")
    # the architecture comes from the checkpoint: a flag that contradicts it is an error, not silently
    # ignored. dropout and use_sdpa change no weight: those flags apply (and say so)
    for key, ck_value in resumed["model_args"].items():
        if key in configurator.given and key in globals() and globals()[key] != ck_value:
            if key not in ("dropout", "use_sdpa"):
                source = configurator.given[key]  # a flag the user typed, or a config file's line
                asked = source if source.startswith("--") else f"{key}={globals()[key]} (from {source})"
                fail(f"{asked} conflicts with the checkpoint's {key}={ck_value}: on resume the architecture comes "
                     f"from the checkpoint (resume with the config files and flags the run started with, or start "
                     f"a new run in another --out_dir)")
            if master:
                print(f"note: {key} changed on resume: {ck_value} -> {globals()[key]}")
    # checkpoints from before use_sdpa left model_args carry it: this run's setting applies; dropout only
    # when given (else the checkpoint's)
    model_args = {k: v for k, v in resumed["model_args"].items() if k != "use_sdpa"}
    # the other settings come from this command, not from the checkpoint: say which ones that changes
    # (tokens per step, the schedule, the optimizer), so a resume with a forgotten flag is not silent
    ck_config = resumed.get("config", {})
    changed = [f"{k} {ck_config[k]} -> {config[k]}" for k in (
        "batch_size", "gradient_accumulation_steps", "learning_rate", "min_lr", "warmup_iters", "lr_decay_iters",
        "weight_decay", "beta1", "beta2", "grad_clip", "muon_lr", "ema", "dtype", "seed")
        if k in ck_config and ck_config[k] != config[k]]
    if changed and master:
        print(f"note: on resume this command's settings apply, and differ from the checkpoint's run: {', '.join(changed)}")
    if "dropout" in configurator.given:
        model_args["dropout"] = dropout
    block_size = model_args["block_size"]
    iter_num, best_val_loss = resumed["iter_num"], resumed["best_val_loss"]
    history = [h for h in resumed.get("history", []) if h["iter"] <= iter_num]
else:
    fail(f"init_from must be 'scratch' or 'resume', got '{init_from}'")

try:  # a bad architecture flag (an unknown --norm, n_embd not divisible by n_head, ...): one line, before any file
    GPTConfig(**model_args)
except ValueError as e:
    fail(e)
if min(len(train_data), len(val_data)) <= block_size:
    fail(f"corpus too short for block_size={block_size}: train has {len(train_data)} tokens, "
         f"val {len(val_data)}; use more text or a smaller --block_size")
tokens_per_step = gradient_accumulation_steps * world * batch_size * block_size
if master:  # fail now, not after an hour of training, if out_dir cannot be written
    try:
        prepare_out_dir(out_dir)
    except CheckpointError as e:
        fail(e)
torch.manual_seed(seed)  # the initial weights (the same on every rank)
batch_gen = torch.Generator()  # reseeded for every micro-batch (see the docstring)
if resumed:
    try:  # the checkpoint's weights, in model_args (its architecture, this run's dropout / use_sdpa)
        model, _ = model_from_checkpoint({**resumed, "model_args": model_args}, device, use_sdpa=use_sdpa)
    except CheckpointError as e:
        fail(e)
    model.train()
else:
    model = GPT(GPTConfig(**model_args, use_sdpa=use_sdpa)).to(device)
# the weights we evaluate and save: the model itself, or (ema > 0) a moving average of its recent weights,
# updated after every step. At a high learning rate the weights wobble from step to step around where
# they are heading, and the average sits closer to it (README "Loss within 300 s")
avg_model = copy.deepcopy(model) if ema else model
if resumed and "train_weights" in resumed:  # saved with ema: its "model" was the average (now in avg_model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(resumed["train_weights"][n])


class Muon(torch.optim.Optimizer):
    """Muon: SGD momentum whose update, a matrix, is orthogonalized (its singular values pushed
    towards 1 by five Newton-Schulz steps), so every direction of a weight matrix learns at a
    similar speed. For the 2-D weights inside the blocks only; embeddings and gains keep AdamW."""

    def __init__(self, params, lr, momentum=0.95):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                X = p.grad.add(buf, alpha=group["momentum"])  # Nesterov momentum, (out, in)
                X = X / (X.norm() + 1e-7)  # now every singular value is <= 1
                tall = X.size(0) > X.size(1)
                X = X.T if tall else X
                for _ in range(5):  # quintic Newton-Schulz iteration (coefficients from the Muon authors)
                    A = X @ X.T
                    X = 3.4445 * X + (-4.7750 * A + 2.0315 * A @ A) @ X
                X = X.T if tall else X
                p.add_(X, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


if muon_lr > 0:
    matrices = [p for n, p in model.named_parameters() if n.startswith("h.") and p.dim() == 2]
    rest = [p for n, p in model.named_parameters() if not (n.startswith("h.") and p.dim() == 2)]
    optimizers = [Muon(matrices, lr=muon_lr),
                  torch.optim.AdamW(param_groups(rest, weight_decay), lr=learning_rate, betas=(beta1, beta2))]
else:
    optimizers = [adamw(model.parameters(), weight_decay, learning_rate, (beta1, beta2), device_type)]
if resumed:
    try:
        for opt, state in zip(optimizers, resumed["optimizer"], strict=True):
            opt.load_state_dict(state)
    except (ValueError, KeyError) as e:
        fail(f"the checkpoint's optimizer state does not fit this run (was --muon_lr changed?): {e}")
    if resumed.get("scaler"):
        scaler.load_state_dict(resumed["scaler"])
    if master:
        print(f"resuming from iteration {iter_num} (best val loss {best_val_loss:.4f})")
bare_model = model  # the module itself, unwrapped: compile and DDP below wrap it as `model`
if compile:  # traced and compiled at the first step (~20 s on 2 CPU cores); README "Loss within 300 s" has what it buys
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[int(os.environ["LOCAL_RANK"])] if device_type == "cuda" else None)
if master:
    print(f"{bare_model.num_params():,} parameters | {tokens_per_step:,} tokens per iteration | device {device}, "
          f"{resolve_dtype(device, dtype)}, attention {'fused (sdpa)' if use_sdpa else 'explicit'}")
    if not time_budget and lr_decay_iters > max_iters:  # a config's schedule, its max_iters cut short by a flag
        print(f"note: the learning rate decays over lr_decay_iters={lr_decay_iters} steps, but the run stops at "
              f"max_iters={max_iters}, at {lr_schedule(max_iters - 1, learning_rate, min_lr, warmup_iters, lr_decay_iters):.2e}"
              f" (min_lr {min_lr:.0e}); pass --lr_decay_iters={max_iters} too to decay within the run")


@torch.no_grad()
def split_losses():
    """Mean loss of the weights we evaluate (avg_model) on eval_iters batches per split. The batches are
    the same at every evaluation (their own seeded generator), so successive val losses are directly
    comparable."""
    out = {}
    avg_model.eval()
    for split, data in ((("train", train_data),) if eval_train else ()) + (("val", val_data),):
        gen = torch.Generator().manual_seed(seed + 1)
        with ctx:  # (the batches are plain integer tensors: autocast only changes the model's math)
            losses = [avg_model(*random_windows(data, gen))[1].item() for _ in range(eval_iters)]
        out[split] = torch.tensor(losses).mean().item()  # averaged in float32, as it always was
    avg_model.train()
    return out


def write_log(append=None):
    """At a checkpoint: rewrite the whole log atomically (it then matches last.pt, also after a
    resume). In between: append one line with a single write."""
    path = os.path.join(out_dir, "log.jsonl")
    try:
        if append is not None and os.path.exists(path):
            with open(path, "a") as f:
                f.write(json.dumps(append) + "\n")
            return
        atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))
    except CheckpointError as e:
        fail(e)
    except OSError as e:  # the append
        fail(f"could not write {path}: {reason_of(e)}")


def save(path):
    """"model" is what was evaluated; with ema the weights being trained go beside it, for a resume."""
    extra = {"train_weights": {n: p.detach().clone() for n, p in bare_model.named_parameters()}} if ema else {}
    try:
        save_checkpoint({
            "kind": "pretrain", "model_args": model_args, "model": avg_model.state_dict(), **tok_state,
            "config": config, "iter_num": iter_num, "best_val_loss": best_val_loss, "history": history,
            "optimizer": [opt.state_dict() for opt in optimizers], "scaler": scaler.state_dict(), **extra,
        }, path)
    except CheckpointError as e:
        fail(e)


# a Ctrl-C or kill (SIGTERM) asks the loop to stop at the end of the current iteration,
# save last.pt and exit cleanly
stop = catch_stop_signals()

# training loop ---------------------------------------------------------------
t_start, t0 = time.time(), 0.0
start_iter = iter_num
train_time = 0.0  # seconds spent training, without evaluations (for max_seconds)
eval_s, step_s = 0.0, 0.0  # how long the last evaluation and the last step took (for time_budget)
while True:
    # with a time budget the schedule runs on the clock: the share of the budget spent, as an iteration
    # of lr_decay_iters, so the rate has decayed when the time is up whatever this machine's speed
    clock = time.time() - T_PROCESS
    sched_iter = int(lr_decay_iters * clock / time_budget) if time_budget else iter_num
    lr = lr_schedule(sched_iter, learning_rate, min_lr, warmup_iters, lr_decay_iters)
    for opt in optimizers:  # Muon's rate follows the same schedule, scaled
        for group in opt.param_groups:
            group["lr"] = lr * (muon_lr / learning_rate if isinstance(opt, Muon) else 1.0)
    if ddp:  # a signal to any one rank stops them all (a Ctrl-C reaches every rank; a kill may reach one)
        sig = torch.tensor([float(stop["signal"] or 0)], device=device)
        torch.distributed.all_reduce(sig, op=torch.distributed.ReduceOp.MAX)
        stop["signal"] = stop["signal"] or int(sig.item()) or None
    last_step = iter_num >= max_iters or (max_seconds and train_time >= max_seconds) or stop["signal"]
    # stop while there is still time for one more evaluation (as long as the last one took), two steps,
    # and 2 s to write the last checkpoint and leave the interpreter
    last_step = last_step or (time_budget and clock + eval_s + 2 * step_s + 2.0 >= time_budget)
    # evaluate every eval_interval and at the end, but never at the iteration the run starts from: a fresh
    # run's step 0 would only measure random weights (~ln(vocab_size)); a resume's was evaluated before
    if master and (iter_num % eval_interval == 0 or last_step) and iter_num != start_iter:
        t_eval = time.time()
        losses = split_losses()
        eval_s = time.time() - t_eval
        if not all(math.isfinite(v) for v in losses.values()):  # the weights went bad: keep the last good files
            fail(f"the evaluation at iteration {iter_num} gave a non-finite loss ({losses}); stopped without "
                 f"saving. The last good checkpoint in {out_dir}/ is kept. Try a lower --learning_rate")
        train_part = f"train {losses['train']:.4f}, " if eval_train else ""
        print(f"eval {iter_num}: {train_part}val {losses['val']:.4f} nats/token "
              f"(~{losses['val'] * bits_per_nat_token:.3f} bits/byte)", flush=True)
        history.append({"iter": iter_num, "train_loss": losses.get("train"), "val_loss": losses["val"],
                        "elapsed_s": round(time.time() - t_start, 3)})
        improved = losses["val"] < best_val_loss
        best_val_loss = min(best_val_loss, losses["val"])
        save(last_path)  # first, so that a ckpt.pt on disk always has a last.pt beside it
        if improved:
            save(ckpt_path)
        write_log()
        if target_val_loss and losses["val"] <= target_val_loss:
            print(f"reached target val loss {target_val_loss} at iteration {iter_num}")
            last_step = True
    if ddp:  # rank 0 decides when to stop (target reached, time budget); every rank follows
        flag = torch.tensor([float(bool(last_step))], device=device)
        torch.distributed.broadcast(flag, 0)
        last_step = bool(flag.item())
    if last_step:
        break

    # forward/backward over gradient_accumulation_steps micro-batches, then one update
    tstep = time.time()
    for micro in range(gradient_accumulation_steps):
        # this micro-batch's own seed: (seed, iteration, its index among all ranks' micro-batches)
        k = (iter_num * world + rank) * gradient_accumulation_steps + micro
        batch_gen.manual_seed(seed * 1_000_003 + k)  # which windows
        torch.manual_seed(seed * 1_000_003 + k)  # which dropout masks
        x, y = random_windows(train_data, batch_gen)
        # with DDP the ranks average their gradients once per step, in the last micro-batch's backward
        only_local = model.no_sync() if ddp and micro < gradient_accumulation_steps - 1 else nullcontext()
        try:
            with only_local:
                with ctx:
                    _, loss = model(x, y)
                # the step's gradient is the mean over its micro-batches; the scale is a no-op unless float16
                scaler.scale(loss / gradient_accumulation_steps).backward()
        except Exception as e:  # --compile builds its kernels in the first step: a compiler that exists but
            if not (compile and iter_num == start_iter and micro == 0):  # fails (no OpenMP, no Triton) says so here
                raise
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            fail(f"--compile=True failed in the first step: {why} (run with --compile=False)")
    if not torch.isfinite(loss):
        fail(f"loss became {loss.item()} at iteration {iter_num}; stopped. The last good checkpoint in "
             f"{out_dir}/ is kept. Try a lower --learning_rate or --dtype=float32")
    scaled_step(optimizers, scaler, grad_clip)  # unscale, clip, step, clear (checkpoint.py)
    if ema:  # a shorter memory over the first steps, so that the random initial weights fade out quickly
        update_average(avg_model, bare_model, min(ema, (1 + iter_num) / (10 + iter_num)))
    step_s = time.time() - tstep
    train_time += step_s
    iter_num += 1

    if master and iter_num % log_interval == 0:
        dt = (train_time - t0) / log_interval  # training time only, evaluations excluded
        t0 = train_time
        last_loss = loss.item()  # the last micro-batch's mean loss
        tok_s = tokens_per_step / dt
        eta = (max_iters - iter_num) * train_time / max(1, iter_num - start_iter)
        step = f"{iter_num}/{max_iters}"
        if time_budget:  # the clock, not the iteration count, ends this run
            eta, step = max(0.0, time_budget - (time.time() - T_PROCESS)), f"{iter_num}"
        print(f"iter {step} | loss {last_loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s | "
              f"{dt * 1000:.0f} ms/iter | ETA {int(eta // 60)}m{int(eta % 60):02d}s", flush=True)
        history.append({"iter": iter_num, "loss": last_loss, "lr": lr, "tokens_per_s": round(tok_s)})
        write_log(append=history[-1])

if master and not ddp and not os.path.exists(ckpt_path):  # e.g. a time budget too short for one step and its eval
    fail(f"no checkpoint was written: the run ended before its first evaluation ({time.time() - t_start:.1f}s)")
if master:
    print(f"done: best val loss {best_val_loss:.4f} nats/token (~{best_val_loss * bits_per_nat_token:.3f} bits/byte), "
          f"{time.time() - t_start:.1f}s -> {ckpt_path}")
if ddp:
    # every rank must hold the same weights (all-reduced gradients, same updates): measure it
    with torch.no_grad():
        flat = torch.cat([p.detach().float().flatten() for p in bare_model.parameters()])
        ref = flat.clone()
        torch.distributed.broadcast(ref, 0)
        drift = (flat - ref).abs().max()
        torch.distributed.all_reduce(drift, op=torch.distributed.ReduceOp.MAX)
    if master:
        print(f"ranks in sync: max |weight difference| across {world} ranks = {drift.item():.3g}")
    # leave together: a rank tearing gloo down while another still talks to it aborts
    torch.distributed.barrier()
    destroy_process_group()
    # even so, gloo's threads sometimes abort the interpreter's own shutdown ("terminate called without
    # an active exception": 1 run in 8-12 here, always after every file was written and the group was
    # destroyed). Nothing is left to clean up: leave without the shutdown, with the right exit code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(stop_exit_code(stop) if stop["signal"] else 0)
if stop["signal"]:
    raise SystemExit(stop_exit_code(stop))
