"""
Devices, precision, optimizer, schedule, batches and checkpoints: the helpers every script shares (the
durable-file helpers of fileio.py are re-exported here, so a training script imports all of them from
one place).

A checkpoint is a dict saved with torch.save and loaded with weights_only=True (tensors and plain
types only, never code): kind ('pretrain' | 'instr' | 'cls'), model_args, model (state dict),
the tokenizer (tok.state(): a character vocabulary or BPE merges, as plain lists), and whatever
history the script adds.
"""
import io
import math
import os
import re
import warnings
from contextlib import nullcontext

import torch

from fileio import CheckpointError, Staged, atomic_write, atomic_write_text, prepare_out_dir, reason_of  # noqa: F401
from model import GPT, GPTConfig
from tokenizer import load_tokenizer


def pick_device(name="auto"):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    kind, _, index = name.partition(":")  # "cuda:1": a GPU by number
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA GPU is available (use --device=cpu)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"no CUDA device {index}: this machine has {torch.cuda.device_count()} (cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1})")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but no Apple GPU is available (use --device=cpu)")
    return name


def cpu_has_fast_bf16():
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX, read from /proc/cpuinfo on
    Linux). There bf16 autocast trains a 4x128 GPT ~1.3x and a 6x256 one ~2-3x faster than float32;
    elsewhere bf16 is emulated and slower, so the config files ask before choosing it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(device, dtype):
    """'auto' = bf16 on GPUs that support it, fp32 elsewhere; anything else is checked."""
    if dtype == "auto":
        # native bf16 only (compute capability 8.0+): older GPUs (T4, V100) emulate it, slower than fp32
        native = device.startswith("cuda") and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bfloat16" if native else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype '{dtype}' (use auto, float32, bfloat16 or float16)")
    return dtype


def autocast(device, dtype):
    """The context that runs the forward pass in dtype (autocast), or plain fp32."""
    dtype = resolve_dtype(device, dtype)
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype))


def grad_scaler(device, dtype):
    """float16 has 5 exponent bits: small gradients underflow to 0 unless the loss is scaled up before
    backward() (and the gradients scaled back before the step). GradScaler does that, and skips a step
    whose gradients overflowed. For bf16/fp32 it is a pass-through (enabled=False)."""
    return torch.amp.GradScaler(device.split(":")[0], enabled=resolve_dtype(device, dtype) == "float16")


def scaled_step(optimizers, scaler, grad_clip):
    """One update, after backward() of scaler.scale(loss): the gradients are unscaled (so the clip sees
    their true norm) and clipped to grad_clip (0 = no clipping), each optimizer steps through the
    scaler (a float16 step whose gradients overflowed is skipped, and the scale shrinks), and the
    gradients are cleared. With bf16/fp32 the scaler is a pass-through."""
    if grad_clip > 0.0:
        for opt in optimizers:
            scaler.unscale_(opt)
        params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    for opt in optimizers:
        scaler.step(opt)
        opt.zero_grad(set_to_none=True)
    scaler.update()


@torch.no_grad()
def update_average(avg_model, model, decay):
    """One step of a moving average of the weights: avg = decay * avg + (1 - decay) * current. The
    training scripts evaluate and save the average (their --ema) instead of the last step's weights."""
    for pa, pm in zip(avg_model.parameters(), model.parameters()):
        pa.lerp_(pm, 1 - decay)


def adamw(params, weight_decay, learning_rate, betas, device_type):
    """AdamW over the trainable params, with the kit's weight-decay rule (param_groups); the fused kernel
    on CUDA (one launch for all tensors)."""
    trainable = [p for p in params if p.requires_grad]
    # fused=None is AdamW's own default (on CPU, its plain loop over the tensors)
    return torch.optim.AdamW(param_groups(trainable, weight_decay), learning_rate, betas,
                             fused=True if device_type == "cuda" else None)


def param_groups(params, weight_decay, lr=None):
    """The one weight-decay rule of the kit: decay the matrices (matmuls, embeddings), never biases or
    norm gains (decaying a gain towards 0 only fights the normalization). lr, if given, is set per group."""
    params = list(params)
    matrices, vectors = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def lr_schedule(it, learning_rate, min_lr, warmup_iters, decay_iters):
    """The one learning-rate schedule of the kit: linear warmup over warmup_iters, then a cosine from
    learning_rate down to min_lr at decay_iters, then min_lr. `it` may be fractional (time budgets)."""
    if it < warmup_iters:  # the ramp starts above 0, so that the very first step already learns
        return (it + 1) * learning_rate / (warmup_iters + 1)
    # how much of the cosine is behind us: 0 at the end of the warmup, 1 from decay_iters on
    done = 1.0 if it > decay_iters else (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    # the cosine's half period from 1 down to 0 (exactly 0 at done = 1), scaled onto learning_rate .. min_lr
    return min_lr + (learning_rate - min_lr) * (1.0 + math.cos(math.pi * done)) / 2


def pad_batch(seqs, value):
    """Right-pad lists of ids to the longest of them: a (B, T) LongTensor. Causal attention means
    padding after a sequence never changes what its real tokens see."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def windows(n, block_size, last_only=False):
    """How a text of n tokens is read: a list of (start, end, counted_from) windows of its ids.

    A text that fits is one window. A longer one is read in windows of block_size tokens, each half a
    block after the one before (the last one ends at the text's end), as sampling slides its window. Each
    token is counted once, in the first window that gives it at least half a block of context, so a mean
    or a maximum over the counted tokens of all windows is one over the whole text (the classifier's
    features), and a loss summed over them scores every token once (evaluate.py). last_only: the last
    window only, the block_size tokens before the text's last one (pool='last' reads one token)."""
    if n <= block_size:
        return [(0, n, 0)]
    if last_only:
        return [(n - block_size, n, n - block_size)]
    out, start, counted = [], 0, 0
    while True:
        start = min(start, n - block_size)
        out.append((start, start + block_size, counted))
        if start + block_size == n:
            return out
        counted = start + block_size  # the next window counts from where this one ends
        start += max(1, block_size // 2)


def save_checkpoint(ckpt, path):
    """torch.save through atomic_write: the previous checkpoint survives any failure. The bytes are made
    in memory first, so a full disk surfaces as the OSError it is ("No space left on device"), not as
    an internal error of torch's zip writer."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load_checkpoint(path, kinds=("pretrain", "instr", "cls"), quantized=True):
    """Load a checkpoint file (or out_dir/ckpt.pt) safely: tensors and plain types only. quantized=False
    (the training scripts) refuses an int8/int4 checkpoint of quantize.py: those are for inference."""
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path} (train one first, e.g. python train.py)")
    try:
        f = open(path, "rb")
    except OSError as e:  # the file is there but cannot be opened: say why (permission, ...)
        raise CheckpointError(f"cannot read {path}: {reason_of(e)}")
    try:  # anything torch.load raises is the content's fault (a truncated zip gives OSError "Invalid argument")
        with f, warnings.catch_warnings():  # a damaged file makes torch warn before it fails: one message is enough
            warnings.simplefilter("ignore")
            ckpt = torch.load(f, map_location="cpu", weights_only=True)  # never runs code from the file
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}")
    if (not isinstance(ckpt, dict) or any(k not in ckpt for k in ("kind", "model_args", "model"))
            or ("vocab" not in ckpt and "merges" not in ckpt)):
        raise CheckpointError(f"{path} is not a checkpoint of this kit (expected keys kind, model_args, model, "
                              f"vocab or merges)")
    if ckpt["kind"] not in kinds:
        raise CheckpointError(f"{path} holds a '{ckpt['kind']}' model, but this needs: {' or '.join(kinds)}")
    try:
        n_vocab = len(load_tokenizer(ckpt))
    except (ValueError, TypeError, KeyError, re.error) as e:
        raise CheckpointError(f"{path}: its tokenizer is damaged ({type(e).__name__}: {e})")
    if "quant" in ckpt and not quantized:
        raise CheckpointError(f"{path} is quantized (int{ckpt['quant']['bits']}): it is for inference only; "
                              f"train from the float checkpoint it came from ({ckpt['quant'].get('source', '?')})")
    wte = ckpt["model"].get("wte.weight", ckpt["model"].get("wte.weight_q"))  # float, or quantize.py's integers
    if wte is None or wte.size(0) != ckpt["model_args"].get("vocab_size") or wte.size(0) != n_vocab:
        raise CheckpointError(f"{path}: vocabulary size does not match the embedding table")
    return ckpt


def model_from_checkpoint(ckpt, device="cpu", **overrides):
    """Rebuild (model in eval mode, tokenizer) from a loaded checkpoint. overrides change settings that
    do not touch the weights (dropout for a finetune)."""
    try:
        model = GPT(GPTConfig(**{**ckpt["model_args"], **overrides}))
        if "quant" in ckpt:  # int8/int4: the same GPT with quantized layers (quantize.py), then its weights
            from quantize import quantize_model
            quantize_model(model, ckpt["quant"]["bits"], ckpt["quant"].get("group_size") or 32)
        # classification checkpoints also hold a head; keep only the GPT's own weights here
        model.load_state_dict({k: v for k, v in ckpt["model"].items() if not k.startswith("head.")})
        tok = load_tokenizer(ckpt)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint weights do not fit the model: {str(e).splitlines()[0]}")
    # NaN or inf weights (a diverged run saved by hand, a damaged file) would answer <pad> after <pad>
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"the checkpoint's weights hold NaN or inf values ({bad[0]}"
                              f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): the run that wrote them diverged")
    return model.to(device).eval(), tok


def export_weights(src, dst, dtype="bfloat16"):
    """A small copy of a checkpoint for sharing: the weights in dtype (bf16 halves fp32's size and keeps
    its range; they are turned back into fp32 when loaded), no optimizer or scaler state. dst is an
    out_dir-shaped folder (dst/ckpt.pt) that every script accepts as --init_from / --out_dir."""
    ckpt = load_checkpoint(src, quantized=False)  # int8/int4 (quantize.py) are already small, and lossy
    small = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scaler")}
    small["model"] = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    prepare_out_dir(dst)
    save_checkpoint(small, os.path.join(dst, "ckpt.pt"))
    return os.path.getsize(os.path.join(dst, "ckpt.pt"))


if __name__ == "__main__":  # python checkpoint.py --src=out-backbone --dst=pretrained/es-char-6x256
    from configurator import configure, fail
    g = {"src": "out-backbone", "dst": "", "dtype": "bfloat16", "overwrite": False}
    configure(g)
    if not g["dst"] or g["dtype"] not in ("bfloat16", "float16", "float32"):
        fail("usage: python checkpoint.py --src=OUT_DIR --dst=FOLDER [--dtype=bfloat16|float16|float32] "
             "[--overwrite=True]")
    if os.path.abspath(g["dst"]) == os.path.abspath(g["src"]):
        fail("--dst must differ from --src: the source (with its optimizer state) is kept")
    if os.path.exists(os.path.join(g["dst"], "ckpt.pt")) and not g["overwrite"]:
        fail(f"{g['dst']}/ckpt.pt already exists; use --overwrite=True to replace it, or another --dst")
    try:
        size = export_weights(g["src"], g["dst"], g["dtype"])
    except CheckpointError as e:
        fail(e)
    print(f"{g['src']} -> {g['dst']}/ckpt.pt: weights only, {g['dtype']}, {size / 1e6:.1f} MB")
