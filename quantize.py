"""
Quantized inference: int8 and int4 weights, with the math in plain sight.

    python quantize.py --out_dir=out-instr --bits=8                  # -> out-instr-int8/ckpt.pt
    python quantize.py --out_dir=out-instr --bits=4 --group_size=32  # -> out-instr-int4/ckpt.pt
    python sample.py --out_dir=out-instr-int8 --prompt="¿Los perros son caninos?"

Every weight matrix of the GPT (attention and MLP Linear layers, and the token embedding table, which
the output layer shares; a learned position table stays float) is stored as small integers q and
float scales s, with w ~ q * s:

- int8, one scale per output channel (row): s[o] = max|w[o, :]| / 127 and q = round(w / s) in
  -127..127. Per row, because rows differ in size (a row's largest weight can be 10x another's): a
  single scale for the matrix would leave the small rows only a few of the 255 levels.
- int4, one scale per group of group_size (32) consecutive weights of a row: q in -7..7 has only 15
  levels, so even a row is too coarse a unit; a scale per 32 weights follows the local size. Two
  4-bit values are packed into each byte (low nibble first).

Rounding to the nearest level errs by at most half a step, |w - q*s| <= s/2. Scales are float16
(rounded up, so the largest weight still fits). Biases and norm gains stay float (they are tiny).
Loading (checkpoint.model_from_checkpoint) is transparent for sample.py, app.py, evaluate.py and
bench.py: QuantLinear/QuantEmbedding keep the integers in memory and dequantize a layer's weight when
it runs (the embedding: only the rows it looks up). That saves memory, not time: on a CPU, the
float matmul after dequantizing is the fast path (README, "Quantized inference").
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def quantize(w, bits, group_size=32):
    """w (out, in) float -> (q, scale). int8: q int8 (out, in), scale (out, 1); int4: q uint8
    (out, in/2) with two values per byte, scale (out, in/group_size). Scales are float16."""
    qmax = 2 ** (bits - 1) - 1  # 127 or 7: symmetric levels -qmax..qmax, so 0 stays exactly 0
    out_f, in_f = w.shape
    g = in_f if bits == 8 else group_size  # int8: the whole row is one group
    wg = w.detach().float().reshape(out_f, in_f // g, g)  # (out, groups, g)
    amax = wg.abs().amax(dim=-1, keepdim=True).clamp(min=1e-4)  # (out, groups, 1)
    scale = (amax / qmax).half()
    # float16 rounding may have made the step a hair too small for the largest weight: one ulp up
    scale = torch.where(scale.float() * qmax < amax, torch.nextafter(scale, torch.tensor(float("inf"), dtype=torch.half)), scale)
    q = torch.round(wg / scale.float()).clamp(-qmax, qmax).to(torch.int8).reshape(out_f, in_f)
    return (pack_int4(q) if bits == 4 else q), scale.squeeze(-1)


def pack_int4(q):
    """(out, in) int8 values in -8..7 -> (out, in/2) uint8: +8 makes them 0..15, then two per byte."""
    u = (q + 8).to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(p):
    """The inverse of pack_int4: (out, in/2) uint8 -> (out, in) int8."""
    lo, hi = (p & 0x0F).to(torch.int8) - 8, (p >> 4).to(torch.int8) - 8
    return torch.stack([lo, hi], dim=-1).reshape(p.size(0), -1)


def dequantize(q, scale, bits):
    """w ~ q * s: (out, in) float32 from quantize()'s output."""
    if bits == 4:
        q = unpack_int4(q)
    out_f, in_f = q.shape
    groups = scale.size(1)
    return (q.float().reshape(out_f, groups, in_f // groups) * scale.float().unsqueeze(-1)).reshape(out_f, in_f)


class QuantLinear(nn.Module):
    """nn.Linear with its weight held as integers + scales; dequantized when the layer runs."""

    def __init__(self, weight, bias, bits, group_size):
        super().__init__()
        self.bits, self.out_features, self.in_features = bits, weight.size(0), weight.size(1)
        q, scale = quantize(weight, bits, group_size)
        self.register_buffer("weight_q", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def weight(self):  # (out, in) float, like nn.Linear's (code that reads .weight keeps working)
        return dequantize(self.weight_q, self.weight_scale, self.bits)

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class QuantEmbedding(nn.Module):
    """nn.Embedding with its table quantized per row (= per output channel of a tied output layer), or
    per group of group_size values within a row for int4.
    A lookup dequantizes only the rows it reads."""

    def __init__(self, weight, bits, group_size):
        super().__init__()
        self.bits = bits
        q, scale = quantize(weight, bits, group_size)
        self.register_buffer("weight_q", q)
        self.register_buffer("weight_scale", scale)

    @property
    def weight(self):
        return dequantize(self.weight_q, self.weight_scale, self.bits)

    def forward(self, idx):
        rows = idx.reshape(-1)
        w = dequantize(self.weight_q[rows], self.weight_scale[rows], self.bits)  # (B*T, C)
        return w.view(*idx.shape, -1)


class TiedQuantHead(nn.Module):
    """The output layer of a weight-tied GPT: logits = x @ table.T with the embedding's quantized table
    (stored once, as in the float model)."""

    def __init__(self, embedding):
        super().__init__()
        self.embedding = [embedding]  # a list: not registered again, so its buffers are saved once

    def forward(self, x):
        return F.linear(x, self.embedding[0].weight.to(x.dtype))


def quantize_model(model, bits, group_size=32):
    """Replace model's Linear layers and token embedding, in place, by quantized ones. Used both to
    quantize trained weights and to build the skeleton a quantized checkpoint is loaded into."""
    tied = model.config.tie_weights
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and not (tied and child is model.lm_head):
                setattr(module, child_name, QuantLinear(child.weight, child.bias, bits, group_size))
    model.wte = QuantEmbedding(model.wte.weight, bits, group_size)
    if tied:
        model.lm_head = TiedQuantHead(model.wte)
    return model


def check_group_size(model_args, bits, group_size):
    """The reason this model cannot be quantized with these settings, or None."""
    if bits not in (4, 8):
        return f"--bits={bits} is not supported (use 8 or 4)"
    if bits == 4:
        C = model_args["n_embd"]
        if group_size < 2 or group_size % 2 or C % group_size:
            return (f"--group_size={group_size} must be even and divide the model's width n_embd={C} "
                    f"(and 4*n_embd) for int4")
    return None


if __name__ == "__main__":
    from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, prepare_out_dir, save_checkpoint
    from configurator import configure, fail

    g = {"out_dir": "out-instr", "bits": 8, "group_size": 32, "dst": "",  # dst '' = <out_dir>-int8 / -int4
         "overwrite": False}  # allow replacing a float checkpoint (or anything else) already at dst
    configure(g)
    src, bits, group_size = g["out_dir"], g["bits"], g["group_size"]
    dst = g["dst"] or f"{src.rstrip('/')}-int{bits}"
    try:
        ckpt = load_checkpoint(src, kinds=("pretrain", "instr", "cls"))
    except CheckpointError as e:
        fail(e)
    if "quant" in ckpt:
        fail(f"{src} is already quantized (int{ckpt['quant']['bits']}); quantize the float checkpoint it came from")
    if ckpt["kind"] == "cls":
        fail(f"{src} is a classifier; quantization covers the GPTs that sample.py and app.py run "
             f"(pretrain and instr checkpoints)")
    if why := check_group_size(ckpt["model_args"], bits, group_size):
        fail(why)
    if os.path.abspath(dst) == os.path.abspath(src):
        fail("--dst must differ from --out_dir: the float checkpoint is kept")
    # an earlier quantized model at dst is replaced (quantizing again after a new finetune); a trained
    # model there (--dst=out by mistake) is not, unless --overwrite=True
    if os.path.exists(os.path.join(dst, "ckpt.pt")) and not g["overwrite"]:
        try:
            earlier = load_checkpoint(dst)
        except CheckpointError:
            earlier = {}
        if "quant" not in earlier:
            fail(f"{dst}/ckpt.pt exists and is not a quantized model; use another --dst, or --overwrite=True to replace it")
    try:
        model, _ = model_from_checkpoint(ckpt)
        quantize_model(model, bits, group_size)
        small = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scaler")}
        small["model"] = model.state_dict()
        small["quant"] = {"bits": bits, "group_size": group_size if bits == 4 else None, "source": src}
        prepare_out_dir(dst)
        save_checkpoint(small, os.path.join(dst, "ckpt.pt"))
    except CheckpointError as e:
        fail(e)
    a, b = os.path.getsize(os.path.join(src, "ckpt.pt")), os.path.getsize(os.path.join(dst, "ckpt.pt"))
    # the ratio is against the float weights alone: a train.py checkpoint also holds the optimizer's state
    # (twice the weights again), which no quantized file needs, and would flatter the ratio 3x
    unique = {v.data_ptr(): v for v in ckpt["model"].values()}.values()  # a tied output layer is the embedding
    weights = sum(v.numel() * v.element_size() for v in unique)
    extra = f", of which the weights {weights / 1e6:.2f} MB" if "optimizer" in ckpt else ""
    print(f"{src}/ckpt.pt ({a / 1e6:.2f} MB{extra}) -> {dst}/ckpt.pt ({b / 1e6:.2f} MB, {b / weights:.2f}x the float "
          f"weights): int{bits}" + (f", groups of {group_size}" if bits == 4 else ", per output channel"))
