"""
A GPT written from first principles, small enough to read in one sitting.

    token ids (B, T) -> token + position embeddings -> n_layer x Block -> LayerNorm -> logits (B, T, V)
    Block = x + attn(ln(x)), then x + mlp(ln(x))      (pre-LN, like GPT-2)

Also here: generate() with a KV cache. Devices, checkpoints and the training rules (optimizer, schedule)
live in checkpoint.py; answering with an instruction model (the chat template around generate) in chat.py.
"""
import math
import os
import shutil
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(kw_only=True)  # fields by name only: checkpoints keep them as a dict (model_args), not in order
class GPTConfig:
    n_layer: int = 4          # blocks, one after another
    n_embd: int = 128         # C: the width of the residual stream that every block reads and writes
    n_head: int = 4           # attention heads side by side, each C / n_head wide
    vocab_size: int = 64      # rows of the token embedding table (and outputs of the head)
    block_size: int = 256     # T: the longest context it sees (learned positions 0..block_size-1)
    bias: bool = True         # biases in Linear and LayerNorm, like GPT-2
    dropout: float = 0.0
    use_sdpa: bool = True     # True: fused F.scaled_dot_product_attention; False: the explicit math
    # architecture options (the defaults are GPT-2's; bench.py races the alternatives)
    pos: str = "learned"      # 'learned' position embeddings, or 'rope' (rotary, applied to q and k)
    norm: str = "layernorm"   # 'layernorm' or 'rmsnorm' (no mean, no bias: cheaper)
    mlp: str = "gelu"         # 'gelu' or 'relu2' (relu squared)
    qk_norm: bool = False     # RMS-normalize queries and keys per head (steadier at high learning rates)
    tie_weights: bool = True  # the output layer reuses the token embedding table

    def __post_init__(self):  # a mistyped option is an error here, not a quietly different model
        for key, allowed in (("pos", ("learned", "rope")), ("norm", ("layernorm", "rmsnorm")), ("mlp", ("gelu", "relu2"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be '{allowed[0]}' or '{allowed[1]}', got '{getattr(self, key)}'")
        if min(self.n_layer, self.n_head, self.n_embd, self.vocab_size, self.block_size) < 1 or self.n_embd % self.n_head:
            raise ValueError(f"n_layer, n_head, n_embd, vocab_size, block_size must be >= 1 and n_embd "
                             f"({self.n_embd}) divisible "
                             f"by n_head ({self.n_head})")
        if self.pos == "rope" and self.n_embd // self.n_head % 2:
            raise ValueError("rope rotates pairs of channels: the head size n_embd / n_head must be even")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be >= 0 and < 1, got {self.dropout}")


def make_norm(cfg):
    return nn.RMSNorm(cfg.n_embd) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


def rope(x, cos, sin):
    """Rotary position embedding: rotate pairs of channels (x1, x2) = (x[i], x[i + hs/2]) of q and k
    (..., T, hs) by an angle that grows with the position, so q.k depends on how far apart two tokens
    are: (x1 cos - x2 sin, x1 sin + x2 cos), written as x * cos + (x with its halves swapped) * sin, where
    the (T, hs) tables repeat each angle's cos in both halves and hold -sin in the first (GPT.__init__).
    4 operations instead of 7: a sampling step is mostly the fixed cost of its operations."""
    return x * cos + x.roll(x.size(-1) // 2, dims=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.dropout, self.block_size = cfg.n_head, cfg.dropout, cfg.block_size
        self.use_sdpa, self.qk_norm = cfg.use_sdpa, cfg.qk_norm
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.record = False  # set True to keep the attention weights in self.att (the app's heatmap)
        self.att = None

    def forward(self, x, mask, rot=None, cache=None, pos=None, last=False):
        """x (B, T, C) -> (B, T, C). mask, rot: the causal mask's rows and RoPE's (cos, sin) for the T
        tokens (GPT.hidden_states); with a cache (a dict, filled here), pos (T,): their window positions.
        last: keys and values for all T tokens (into the cache), the output for the last one only (B, 1, C)."""
        B, T, C = x.size()
        hs = C // self.n_head
        # one matmul makes q, k and v for every head; a view + permute splits them: (3, B, nh, T, hs)
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)
        qk, v = qkv[:2], qkv[2]  # q and k stay together: norm and rotation are one call for both
        if self.qk_norm:
            qk = F.rms_norm(qk, (hs,))
        if rot is not None:  # the angles of each token's own position
            qk = rope(qk, rot[0].to(qk.dtype), rot[1].to(qk.dtype))
        q, k = qk  # (B, nh, T, hs) each
        fresh = cache is not None and "k" not in cache  # a cache's first call: the window's first T tokens
        if cache is not None:  # KV cache: keys/values of earlier positions are reused, not recomputed
            if fresh:  # room for a whole window, allocated once
                cache["k"] = k.new_zeros(B, self.n_head, self.block_size, hs)
                cache["v"] = v.new_zeros(B, self.n_head, self.block_size, hs)
            cache["k"].index_copy_(2, pos, k)  # write in place at the new positions: no copy of the rest
            cache["v"].index_copy_(2, pos, v)
            if not fresh:
                # attend to every slot, (B, nh, block_size, hs): the mask hides those not written yet, and
                # the shapes never change from one token to the next (what compile_decoding needs)
                k, v = cache["k"], cache["v"]
        # no earlier keys (no cache, or a fresh one being filled): the T tokens attend among themselves,
        # causally, so the fill of a new window costs what a pass without a cache costs
        mask = mask[:, :k.size(2)]  # (T, Tk): the mask's columns for the keys attended to
        if last:  # one query, the last token's: it sees every key (its mask row is all zeros)
            q, mask, T = q[:, :, -1:], mask[-1:], 1
        causal = (cache is None or fresh) and T > 1
        p = self.dropout if self.training else 0.0
        if self.use_sdpa and not self.record:
            # one fused kernel (flash / memory-efficient where available), same math as below; where no
            # earlier keys exist, is_causal says the same as the mask and picks the fastest kernel
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if causal or last else mask.to(q.dtype),
                                               is_causal=causal, dropout_p=p)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, Tk) similarity scores
            att = att + mask.to(att.dtype)  # + (T, Tk): -inf after each query's position (causal)
            att = F.softmax(att, dim=-1)  # each row: how much query i takes from each key
            if self.record:
                self.att = att.detach()
            att = F.dropout(att, p) if p > 0 else att
            y = att @ v  # (B, nh, T, hs) weighted sum of values
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble the heads side by side
        y = self.c_proj(y)
        return F.dropout(y, p) if p > 0 else y  # (skipping a no-op call matters when sampling)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = 4 * cfg.n_embd  # each token's vector is widened 4x, transformed, then projected back to C
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.relu2 = cfg.mlp == "relu2"
        self.record = False  # set True to keep the hidden activations in self.act (the classifier's max pooling)

    def forward(self, x):
        h = self.c_fc(x)  # (B, T, 4C)
        if self.relu2 and not torch.is_grad_enabled():  # no backward will need relu's output: square it in
            h = F.relu_(h).square_()  # place, sparing two (B, T, 4C) buffers (~3% of batch-8 sampling)
        else:
            h = F.relu(h).square() if self.relu2 else F.gelu(h)
        if self.record:
            self.act = h  # (B, T, 4C): each hidden unit's activation at each token
        h = self.c_proj(h)
        return F.dropout(h, self.dropout) if self.training and self.dropout > 0 else h


class Block(nn.Module):
    """One layer of the residual stream x (B, T, C): attention, then the MLP, each reading a normalized copy
    of x and adding what it computes back to x (pre-norm). The names are GPT-2's checkpoint keys."""

    def __init__(self, cfg):
        super().__init__()
        self.ln_1, self.attn = make_norm(cfg), CausalSelfAttention(cfg)  # tokens talk to each other
        self.ln_2, self.mlp = make_norm(cfg), MLP(cfg)  # then each token thinks on its own

    def forward(self, x, mask, rot=None, cache=None, pos=None, last=False):
        heard = self.attn(self.ln_1(x), mask, rot, cache, pos, last)  # (B, T, C) what each token gathered from earlier ones
        x = (x[:, -1:] if last else x) + heard  # last: (B, 1, C), the only token whose output is wanted
        return x + self.mlp(self.ln_2(x))  # (B, T, C) plus what each token made of it on its own


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # token embeddings
        # learned position embeddings (GPT-2); with RoPE, positions enter inside attention instead
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.compiled_step = None  # generation's one-token step, once compile_decoding() has run
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight  # weight tying: reading and writing tokens share a table
        # shared by the blocks: the causal mask, added to the attention scores (mask[i, j] = 0 where query i
        # may look at key j <= i, -inf where j > i: the model never sees the future), and RoPE's angles
        bs, hs = cfg.block_size, cfg.n_embd // cfg.n_head
        self.register_buffer("mask", torch.full((bs, bs), float("-inf")).triu(1), persistent=False)
        if cfg.pos == "rope":  # each position's angles (hs/2 of them), laid out for rope(): (block_size, hs)
            # pair i turns by position * 10000^(-2i/hs): fast pairs tell neighbours apart, slow ones far
            # positions (10000: the RoPE paper's base, as in the Transformer's sinusoidal positions)
            freq = 1.0 / (10000 ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
            ang = torch.arange(bs, dtype=torch.float32)[:, None] * freq
            self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], dim=1), persistent=False)  # (bs, hs)
            self.register_buffer("sin", torch.cat([-ang.sin(), ang.sin()], dim=1), persistent=False)
        # GPT-2 init: N(0, 0.02) everywhere, then the two layers of each block that write into the residual
        # stream drawn again 1/sqrt(2 n_layer) smaller, so that the stream's sum of 2 n_layer writes stays small
        writer_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        with torch.no_grad():  # in place, module by module (the same draws in the same order for a seed)
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    m.weight.normal_(0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
            for block in self.h:
                block.attn.c_proj.weight.normal_(0.0, writer_std)
                block.mlp.c_proj.weight.normal_(0.0, writer_std)

    def num_params(self):  # position embeddings count; a tied lm_head is the same tensor as wte
        n = sum(p.numel() for p in self.parameters())
        # quantized layers (quantize.py) hold their weights as integer buffers: count those values too
        return n + sum(m.weight_q.numel() * (2 if m.bits == 4 else 1) for m in self.modules() if hasattr(m, "weight_q"))

    def hidden_states(self, idx, caches=None, pos=None, every_layer=False, last=False):
        """(B, T) token ids -> (B, T, C) final hidden states (after ln_f). With caches (one dict per block,
        generate_stream), pos (T,) holds the tokens' positions in the window (on empty caches: 0..T-1).
        Classification can also ask for every_layer: a list of each block's output, then the final
        states (n_layer + 1). last: the last block computes the last token's output only, (B, 1, C)."""
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        # the tokens' positions: the window's first T, or (a cached step) pos; each token's mask row
        # lets it see the positions up to its own (to the cache's slots, with a cache)
        rows = slice(0, T) if pos is None else pos
        mask = self.mask[rows, :T] if caches is None else self.mask[rows]  # (T, T) or (T, block_size)
        rot = (self.cos[rows], self.sin[rows]) if self.config.pos == "rope" else None  # (T, hs) each
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[rows]  # + (T, C): the rows of the tokens' positions
        if self.training and self.config.dropout > 0:
            x = F.dropout(x, self.config.dropout)
        layers = []  # each block's output, kept only for every_layer (sampling never asks for them)
        for i, block in enumerate(self.h):
            x = block(x, mask, rot, None if caches is None else caches[i], pos, last and i == len(self.h) - 1)
            if every_layer:
                layers.append(x)
        return layers + [self.ln_f(x)] if every_layer else self.ln_f(x)

    def forward(self, idx, targets=None):
        """idx (B, T) -> logits (B, T, V); with targets (B, T), also the mean cross-entropy.
        Targets equal to -100 (prompt, padding) are ignored by the loss."""
        logits = self.lm_head(self.hidden_states(idx))  # (B, T, V)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)

    def next_logits(self, idx, caches=None, pos=None):
        """(B, T) ids -> (B, V) float logits for the token after the last one (a step of generation)."""
        # filling a cache, the last block needs every token's keys and values but only the last token's output
        last = caches is not None and idx.size(1) > 1
        return self.lm_head(self.hidden_states(idx, caches, pos, last=last)[:, -1, :]).float()

    def compile_decoding(self, batch_sizes=(1,)):
        """Run each one-token step of cached generation as one compiled program (torch.compile, on CPU
        with inductor's C++ wrapper): a step is ~40 tiny operations, whose overhead is most of its time.
        Compiles once per batch size, here for batch_sizes (~15 s on 2 CPU cores). Needs a C++ compiler;
        any failure is a RuntimeError of one line (torch's own messages are long)."""
        device = self.wte.weight.device
        options = {"cpp_wrapper": True} if device.type == "cpu" else None
        if device.type == "cpu" and (why := missing_cpp_compiler()):  # say so now, not after ~10 s of tracing
            raise RuntimeError(why)
        self.compiled_step = torch.compile(self.next_logits, fullgraph=True, dynamic=False, options=options)
        try:
            for b in batch_sizes:  # compile now: a prompt of one token, then one cached step
                self.generate(torch.zeros(b, 1, dtype=torch.long, device=device), 2, temperature=0.0)
        except Exception as e:
            self.compiled_step = None
            raise RuntimeError((str(e).strip().splitlines() or [type(e).__name__])[0][:200]) from e

    @torch.inference_mode()  # like no_grad, and also skips autograd's bookkeeping on views: ~10% faster here
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, stop_token=None,
                        use_cache=True, generator=None, top_p=None):
        """Yield new token ids, each a (B,) tensor, one at a time.

        The context is a window idx[:, start:] of at most block_size tokens. When it is full it
        slides forward by half a block (and the cache is refilled), so learned positions stay
        valid and the cache is rebuilt only every block_size/2 tokens. Cached and uncached
        generation use the same windows, so greedy outputs are identical."""
        bs = self.config.block_size
        start = max(0, idx.size(1) - bs)
        caches = None
        positions = torch.arange(bs, device=idx.device)  # a token's position in the window
        step = self.compiled_step or self.next_logits  # the one-token step (compile_decoding)
        newest = idx[:, -1:]  # (B, 1) the token a cached step feeds in: the one written last
        for _ in range(max_new_tokens):
            if idx.size(1) - start > bs:  # window full: slide by half a block (keep >= 1 token), drop the cache
                start = idx.size(1) - max(1, bs // 2)
                caches = None
            if not use_cache:  # recompute the whole window every step (what the cache saves)
                logits = self.next_logits(idx[:, start:])
            elif caches is None:  # fill the cache with the whole window
                caches = [{} for _ in self.h]
                logits = self.next_logits(idx[:, start:], caches, positions[:idx.size(1) - start])
            else:  # only the newest token goes through the network
                p = idx.size(1) - 1 - start
                logits = step(newest, caches, positions[p:p + 1])
            if temperature == 0:
                next_id = logits.max(dim=-1).indices  # greedy (the same first maximum as argmax, 3x faster at batch 8)
            else:
                logits = logits / temperature
                if top_k is not None and top_k > 0:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = float("-inf")  # keep only the k most likely
                if top_p is not None and top_p < 1.0:  # nucleus: the fewest tokens whose mass reaches top_p
                    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
                    p_sorted = F.softmax(sorted_logits, dim=-1)
                    drop = p_sorted.cumsum(-1) - p_sorted >= top_p  # the mass before a token already suffices
                    logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
            newest = next_id[:, None]  # a fresh (B, 1) tensor: the same strides at every step, as compile wants
            idx = torch.hstack((idx, newest))  # (B, T + 1)
            yield next_id
            if stop_token is not None and bool((next_id == stop_token).all()):
                return

    @torch.inference_mode()
    def generate(self, idx, max_new_tokens, **kw):
        """idx (B, T) -> (B, T + new) with the new tokens appended (see generate_stream)."""
        new = list(self.generate_stream(idx, max_new_tokens, **kw))
        return torch.cat([idx] + [t[:, None] for t in new], dim=1) if new else idx


def missing_cpp_compiler():
    """Why torch.compile cannot run on CPU here (one line), or None: on CPU it compiles C++ with $CXX,
    else g++ (clang++ on macOS)."""
    cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    return None if shutil.which(cxx) else f"torch.compile needs a C++ compiler on CPU, and '{cxx}' was not found"
