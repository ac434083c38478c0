"""
Devices, precision and checkpoints: the helpers every script shares.

A checkpoint is a dict saved with torch.save and loaded with weights_only=True (tensors and plain
types only, never code): kind ('pretrain' | 'instr' | 'cls'), model_args, model (state dict),
vocab, and whatever history the script adds.
"""
import os
import warnings
from contextlib import nullcontext

import torch

from model import GPT, GPTConfig
from tokenizer import CharTokenizer


def pick_device(name="auto"):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA GPU is available (use --device=cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but no Apple GPU is available (use --device=cpu)")
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda or mps)")
    return name


def autocast(device, dtype):
    """bf16/fp16 autocast where asked; 'auto' = bf16 on GPUs that support it, fp32 elsewhere."""
    dev = device.split(":")[0]
    if dtype == "auto":
        dtype = "bfloat16" if dev == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    if dtype == "float32":
        return nullcontext()
    if dtype not in ("bfloat16", "float16"):
        raise ValueError(f"unknown dtype '{dtype}' (use auto, float32, bfloat16 or float16)")
    return torch.autocast(device_type=dev, dtype=getattr(torch, dtype))


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or of the wrong kind (one clear message)."""


def save_checkpoint(ckpt, path):
    """Write atomically: a crash mid-write leaves the previous file intact."""
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, kinds=("pretrain", "instr", "cls")):
    """Load a checkpoint file (or out_dir/ckpt.pt) safely: tensors and plain types only."""
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path} (train one first, e.g. python train.py)")
    try:
        with warnings.catch_warnings():  # a damaged file makes torch warn before it fails: one message is enough
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never runs code from the file
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in ("kind", "model_args", "model", "vocab")):
        raise CheckpointError(f"{path} is not a checkpoint of this kit (expected keys kind, model_args, model, vocab)")
    if ckpt["kind"] not in kinds:
        raise CheckpointError(f"{path} holds a '{ckpt['kind']}' model, but this needs: {' or '.join(kinds)}")
    wte = ckpt["model"].get("wte.weight")
    if wte is None or wte.size(0) != ckpt["model_args"].get("vocab_size") or wte.size(0) != len(ckpt["vocab"]):
        raise CheckpointError(f"{path}: vocabulary size does not match the embedding table")
    return ckpt


def model_from_checkpoint(ckpt, device="cpu"):
    """Rebuild (model in eval mode, tokenizer) from a loaded checkpoint."""
    try:
        model = GPT(GPTConfig(**ckpt["model_args"]))
        # classification checkpoints also hold a head; keep only the GPT's own weights here
        model.load_state_dict({k: v for k, v in ckpt["model"].items() if not k.startswith("head.")})
    except (TypeError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint weights do not fit the model: {str(e).splitlines()[0]}")
    return model.to(device).eval(), CharTokenizer(ckpt["vocab"])

