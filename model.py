"""
A GPT written from first principles, small enough to read in one sitting.

    token ids (B, T) -> token + position embeddings -> n_layer x Block -> LayerNorm -> logits (B, T, V)
    Block = x + attn(ln(x)), then x + mlp(ln(x))      (pre-LN, like GPT-2)

Also here: generate() with a KV cache. Devices and checkpoints live in checkpoint.py.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 64
    block_size: int = 256     # the longest context the model sees (learned positions 0..block_size-1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True         # biases in Linear and LayerNorm, like GPT-2
    use_sdpa: bool = True     # True: fused F.scaled_dot_product_attention; False: the explicit math
    # architecture options (the defaults are GPT-2's; bench.py races the alternatives)
    pos: str = "learned"      # 'learned' position embeddings, or 'rope' (rotary, applied to q and k)
    norm: str = "layernorm"   # 'layernorm' or 'rmsnorm' (no mean, no bias: cheaper)
    mlp: str = "gelu"         # 'gelu' or 'relu2' (relu squared)
    qk_norm: bool = False     # RMS-normalize queries and keys per head (steadier at high learning rates)
    tie_weights: bool = True  # the output layer reuses the token embedding table


def make_norm(cfg):
    return nn.RMSNorm(cfg.n_embd) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


def rope(x, cos, sin):
    """Rotary position embedding: rotate pairs of channels of q and k (..., T, hs) by an angle
    that grows with the position, so q.k depends on how far apart two tokens are."""
    h = x.size(-1) // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.n_embd, self.dropout, self.block_size = cfg.n_head, cfg.n_embd, cfg.dropout, cfg.block_size
        self.use_sdpa, self.rope, self.qk_norm = cfg.use_sdpa, cfg.pos == "rope", cfg.qk_norm
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # mask[i, j] = 1 where query i may look at key j (j <= i): the model never sees the future
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, cfg.block_size, cfg.block_size), persistent=False)
        if self.rope:  # rotation angles for every position: (block_size, hs/2)
            hs = cfg.n_embd // cfg.n_head
            freq = 1.0 / (10000 ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
            ang = torch.arange(cfg.block_size, dtype=torch.float32)[:, None] * freq
            self.register_buffer("cos", ang.cos(), persistent=False)
            self.register_buffer("sin", ang.sin(), persistent=False)
        self.record = False  # set True to keep the attention weights in self.att (the app's heatmap)
        self.att = None

    def forward(self, x, cache=None):
        B, T, C = x.size()
        hs = C // self.n_head
        # one matmul makes q, k and v for every head; a view + permute splits them: (3, B, nh, T, hs)
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)
        qk, v = qkv[:2], qkv[2]  # q and k stay together: norm and rotation are one call for both
        if self.qk_norm:
            qk = F.rms_norm(qk, (hs,))
        n = cache.get("n", 0) if cache is not None else 0  # positions the cache already holds
        if self.rope:  # positions continue after what the cache already holds
            qk = rope(qk, self.cos[n:n + T].to(qk.dtype), self.sin[n:n + T].to(qk.dtype))
        q, k = qk  # (B, nh, T, hs) each
        if cache is not None:  # KV cache: keys/values of earlier positions are reused, not recomputed
            if "k" not in cache:  # room for a whole window, allocated once and filled from the left
                cache["k"] = k.new_empty(B, self.n_head, self.block_size, hs)
                cache["v"] = v.new_empty(B, self.n_head, self.block_size, hs)
            cache["k"][:, :, n:n + T], cache["v"][:, :, n:n + T] = k, v  # write in place: no copy of the rest
            cache["n"] = n + T
            k, v = cache["k"][:, :, :n + T], cache["v"][:, :, :n + T]  # (B, nh, Tk, hs)
        Tk = k.size(2)
        # the T queries sit at positions Tk-T .. Tk-1, so they use those rows of the causal mask
        mask = self.mask[:, :, Tk - T:Tk, :Tk] if T > 1 else None  # (1, 1, T, Tk); one new token sees all
        p = self.dropout if self.training else 0.0
        if self.use_sdpa and not self.record:
            # one fused kernel (flash / memory-efficient where available), same math as below;
            # is_causal (T == Tk) and no mask at all (a single new token) pick the fastest kernels
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if T == Tk else mask,
                                               is_causal=T == Tk and T > 1, dropout_p=p)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, Tk) similarity scores
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))  # causal: no peeking at later tokens
            att = F.softmax(att, dim=-1)  # each row: how much query i takes from each key
            if self.record:
                self.att = att.detach()
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, hs) weighted sum of values
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble the heads side by side
        y = self.c_proj(y)
        return self.resid_dropout(y) if p > 0 else y  # (skipping a no-op call matters when sampling)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.relu2 = cfg.mlp == "relu2"

    def forward(self, x):
        h = self.c_fc(x)  # (B, T, 4C)
        h = F.relu(h).square() if self.relu2 else F.gelu(h)
        h = self.c_proj(h)
        return self.dropout(h) if self.training and self.dropout.p > 0 else h


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)  # tokens talk to each other
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # token embeddings
        # learned position embeddings (GPT-2); with RoPE, positions enter inside attention instead
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight  # weight tying: reading and writing tokens share a table
        # GPT-2 init: N(0, 0.02), residual projections scaled down so the residual stream stays small
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self):  # position embeddings count; a tied lm_head is the same tensor as wte
        n = sum(p.numel() for p in self.parameters())
        # quantized layers (quantize.py) hold their weights as integer buffers: count those values too
        return n + sum(m.weight_q.numel() * (2 if m.bits == 4 else 1) for m in self.modules() if hasattr(m, "weight_q"))

    def hidden_states(self, idx, caches=None, pos0=0, every_layer=False):
        """(B, T) token ids -> (B, T, C) final hidden states (after ln_f). Used by classification, which
        can also ask for every_layer: a list of each block's output, then the final states (n_layer + 1)."""
        B, T = idx.size()
        if pos0 + T > self.config.block_size:
            raise ValueError(f"sequence of {pos0 + T} tokens is longer than block_size {self.config.block_size}")
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[pos0:pos0 + T]  # + (T, C): the rows of positions pos0 .. pos0+T-1
        if self.training and self.drop.p > 0:
            x = self.drop(x)
        layers = []  # each block's output, kept only for every_layer (sampling never asks for them)
        for i, block in enumerate(self.h):
            x = block(x, None if caches is None else caches[i])
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

    def configure_optimizer(self, weight_decay, learning_rate, betas, device_type):
        params = [p for p in self.parameters() if p.requires_grad]
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(param_groups(params, weight_decay), lr=learning_rate, betas=betas, **extra)

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
        for _ in range(max_new_tokens):
            if idx.size(1) - start > bs:  # window full: slide by half a block, drop the cache
                start = idx.size(1) - bs // 2
                caches = None
            if not use_cache:  # recompute the whole window every step (what the cache saves)
                h = self.hidden_states(idx[:, start:])
            elif caches is None:  # fill the cache with the whole window
                caches = [{} for _ in self.h]
                h = self.hidden_states(idx[:, start:], caches)
            else:  # only the newest token goes through the network
                h = self.hidden_states(idx[:, -1:], caches, pos0=idx.size(1) - 1 - start)
            logits = self.lm_head(h[:, -1, :]).float()  # (B, V) for the last position only
            if temperature == 0:
                next_id = torch.argmax(logits, dim=-1)  # greedy
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
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            yield next_id
            if stop_token is not None and bool((next_id == stop_token).all()):
                return

    @torch.inference_mode()
    def generate(self, idx, max_new_tokens, **kw):
        """idx (B, T) -> (B, T + new) with the new tokens appended (see generate_stream)."""
        new = list(self.generate_stream(idx, max_new_tokens, **kw))
        return torch.cat([idx] + [t[:, None] for t in new], dim=1) if new else idx


def param_groups(params, weight_decay, lr=None):
    """The one weight-decay rule of the kit: decay the matrices (matmuls, embeddings), never biases or
    norm gains (decaying a gain towards 0 only fights the normalization). lr, if given, is set per group."""
    params = list(params)
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def lr_schedule(it, learning_rate, min_lr, warmup_iters, decay_iters):
    """The one learning-rate schedule of the kit: linear warmup over warmup_iters, then a cosine from
    learning_rate down to min_lr at decay_iters, then min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def pad_batch(seqs, value):
    """Right-pad lists of ids to the longest of them: a (B, T) LongTensor. Causal attention means
    padding after a sequence never changes what its real tokens see."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def prompt_ids(tok, prompt, block_size, max_new_tokens, history=(), system=""):
    """What an instruction model sees for a prompt: the chat template (tokenizer.encode_chat: the
    system prompt, earlier turns, <instr> prompt <resp>), oldest turns dropped and then the prompt cut
    from the left if needed so that an answer of max_new_tokens (at most a quarter of the window: the
    conversation matters more than room for an answer that long, which slides the window if
    it comes) still fits. Returns (ids, tokens cut, turns dropped)."""
    ids, dropped, cut = tok.encode_chat(prompt, history, system,
                                        max_len=block_size - min(max_new_tokens, block_size // 4))
    return ids, cut, dropped


def answer_ids(model, tok, prompt, max_new_tokens=128, temperature=0.0, top_k=None, generator=None,
               history=(), system=""):
    """Yield the token ids an instruction model writes after prompt (and the conversation so far), its
    final <eos> included. Raw traces are built from these ids, not from the text: special tokens have
    no text to encode back."""
    ids = prompt_ids(tok, prompt, model.config.block_size, max_new_tokens, history, system)[0]
    idx = torch.tensor([ids], dtype=torch.long, device=model.wte.weight.device)  # (1, T)
    for t in model.generate_stream(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                   stop_token=tok.eos_id, generator=generator):
        yield t.item()


def answer_stream(model, tok, prompt, max_new_tokens=128, temperature=0.0, top_k=None, generator=None,
                  history=(), system=""):
    """Yield an instruction model's answer to prompt as text, token by token, until <eos>. A character
    whose bytes BPE split across tokens comes out whole, once its last byte is there."""
    from tokenizer import StreamDecoder
    dec = StreamDecoder(tok)
    for i in answer_ids(model, tok, prompt, max_new_tokens, temperature, top_k, generator, history, system):
        text = dec.add(i)  # <eos> and the other specials add nothing
        if text:
            yield text
    if text := dec.flush():
        yield text
