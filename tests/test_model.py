"""model.py and checkpoint.py: attention (explicit == SDPA), causality, the KV cache, generation,
the shared training rules (weight decay, LR schedule, padding) and safe, durable checkpoint files."""
import errno
import os

import pytest
import torch

from checkpoint import (CheckpointError, adamw, atomic_write, grad_scaler, load_checkpoint, lr_schedule,
                        model_from_checkpoint, pad_batch, param_groups, prepare_out_dir, save_checkpoint)
from model import GPT, GPTConfig, rope
from tokenizer import CharTokenizer


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    args.update(kw)
    return GPT(GPTConfig(**args)).eval()


def test_explicit_and_sdpa_attention_agree_values_and_gradients():
    m1 = _model(use_sdpa=True)
    m2 = _model(use_sdpa=False)
    m2.load_state_dict(m1.state_dict())
    idx = torch.randint(0, 23, (3, 16))
    l1, loss1 = m1(idx, idx)
    l2, loss2 = m2(idx, idx)
    assert torch.allclose(l1, l2, atol=1e-5)
    loss1.backward()
    loss2.backward()
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-5), n


def test_explicit_attention_under_cpu_bf16_autocast_matches_sdpa():
    # the CPU bf16 training configs use the explicit path (faster there): same loss and gradients up to bf16 rounding
    arch = dict(pos="rope", norm="rmsnorm", mlp="relu2")  # the fast recipe's options
    m1, m2 = _model(use_sdpa=True, **arch), _model(use_sdpa=False, **arch)
    m2.load_state_dict(m1.state_dict())
    idx = torch.randint(0, 23, (3, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (_, loss1), (_, loss2) = m1(idx, idx), m2(idx, idx)
    assert abs(loss1.item() - loss2.item()) < 1e-2
    loss1.backward()
    loss2.backward()
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        assert torch.nn.functional.cosine_similarity(p1.grad.flatten(), p2.grad.flatten(), dim=0) > 0.99, n


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_causality(use_sdpa):
    m = _model(use_sdpa=use_sdpa)
    idx = torch.randint(0, 23, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (idx[0, 8] + 1) % 23
    a, _ = m(idx)
    b, _ = m(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


ARCHS = [{}, {"pos": "rope", "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True, "tie_weights": False, "bias": False}]


def test_rope_rotates_channel_pairs_and_scores_depend_on_distance():
    # RoPE as complex numbers: channel pair (i, i + hs/2) of the vector at position m is multiplied by
    # e^(i m f_i), f_i = 10000^(-2i/hs). The model's tables and rope() must give exactly that rotation.
    hs, T = 16, 12
    model = GPT(GPTConfig(vocab_size=10, block_size=T, n_layer=1, n_head=2, n_embd=2 * hs, pos="rope"))
    cos, sin = model.cos.double(), model.sin.double()  # (T, hs)
    x = torch.randn(3, T, hs, dtype=torch.float64)
    got = rope(x, cos, sin)
    f = 1.0 / 10000 ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    turn = torch.polar(torch.ones(T, hs // 2, dtype=torch.float64), torch.arange(T, dtype=torch.float64)[:, None] * f)
    want = torch.complex(x[..., :hs // 2], x[..., hs // 2:]) * turn
    assert torch.allclose(got, torch.cat([want.real, want.imag], dim=-1), atol=1e-5)
    # so the score of a query and a key depends on how far apart they are, not where: q at m, k at n
    q, k = torch.randn(hs, dtype=torch.float64), torch.randn(hs, dtype=torch.float64)
    rq, rk = rope(q.expand(T, hs), cos, sin), rope(k.expand(T, hs), cos, sin)  # (T, hs): at every position
    assert torch.allclose(rq[5] @ rk[2], rq[9] @ rk[6], atol=1e-5) and not torch.allclose(rq[5] @ rk[2], rq[5] @ rk[4])


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_options_explicit_and_sdpa_agree(arch):
    m1, m2 = _model(use_sdpa=True, **arch), _model(use_sdpa=False, **arch)
    m2.load_state_dict(m1.state_dict())
    idx = torch.randint(0, 23, (2, 16))
    assert torch.allclose(m1(idx)[0], m2(idx)[0], atol=1e-5)
    if arch:
        assert m1.wpe is None and m1.lm_head.weight is not m1.wte.weight


def test_relu2_in_place_without_grad_gives_the_same_outputs():
    # MLP squares relu's output in place when no backward will run (sampling, features): the logits must be
    # those of the autograd path, the hidden activations the classifier records too, and training still runs
    m = _model(mlp="relu2")
    idx = torch.randint(0, 23, (2, 16))
    m.h[0].mlp.record = True
    want, _ = m(idx)  # grad enabled: the out-of-place path
    want_act = m.h[0].mlp.act.detach().clone()
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            got, _ = m(idx)
        assert torch.equal(got, want.detach()) and torch.equal(m.h[0].mlp.act, want_act)
    assert (want_act >= 0).all() and (want_act == 0).any()  # relu, squared: the zeros stay zeros
    _, loss = m(idx, idx)
    loss.backward()
    assert m.h[0].mlp.c_fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS + [{"use_sdpa": False}])
@pytest.mark.parametrize("prompt_len", [1, 5, 16, 20])
def test_kv_cache_greedy_equals_uncached_past_block_size(prompt_len, arch):
    m = _model(seed=3, **arch)
    idx = torch.randint(0, 23, (2, prompt_len))
    a = m.generate(idx, 40, temperature=0.0, use_cache=True)  # 40 new tokens >> block_size 16
    b = m.generate(idx, 40, temperature=0.0, use_cache=False)
    assert a.shape == (2, prompt_len + 40)
    assert torch.equal(a, b)


def test_compiled_decoding_gives_the_same_tokens():
    """compile_decoding: the one-token steps run compiled (counted), the window slides (block_size 16),
    and greedy decoding writes exactly the tokens of the plain model."""
    m = _model(seed=5, **ARCHS[1])
    idx = torch.randint(0, 23, (1, 5))
    plain = m.generate(idx, 40, temperature=0.0)
    m.compile_decoding()
    steps, compiled = [], m.compiled_step
    m.compiled_step = lambda *a: steps.append(1) or compiled(*a)
    assert torch.equal(m.generate(idx, 40, temperature=0.0), plain)
    assert len(steps) >= 30  # all but the steps that (re)fill the cache


def test_generate_stop_token_and_sampling_controls():
    m = _model(seed=4)
    idx = torch.zeros((1, 3), dtype=torch.long)
    greedy = m.generate(idx, 30, temperature=0.0)
    written = greedy[0, 3:].tolist()
    stop = written[2]  # a token the model writes; generation stops right after it first appears
    out = m.generate(idx, 30, temperature=0.0, stop_token=stop)
    assert torch.equal(out, greedy[:, :3 + written.index(stop) + 1]) and out.size(1) < greedy.size(1)
    g = torch.Generator().manual_seed(0)
    k1 = m.generate(idx, 50, temperature=1.0, top_k=1, generator=g)
    assert torch.equal(k1, greedy[:, :53] if greedy.size(1) >= 53 else m.generate(idx, 50, temperature=0.0))
    s1 = m.generate(idx, 20, temperature=1.0, generator=torch.Generator().manual_seed(7))
    s2 = m.generate(idx, 20, temperature=1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(s1, s2)


def test_tiny_model_learns_a_small_text():
    text = "el perro es un canino. el gato es un felino. " * 20
    tok = CharTokenizer.from_texts([text])
    data = torch.tensor(tok.encode(text))
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=len(tok), block_size=32, n_layer=2, n_head=2, n_embd=48)).train()
    opt = adamw(m.parameters(), 0.0, 3e-3, (0.9, 0.99), "cpu")
    for step in range(150):
        ix = torch.randint(0, len(data) - 33, (16,))
        x = torch.stack([data[i:i + 32] for i in ix])
        y = torch.stack([data[i + 1:i + 33] for i in ix])
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5  # from ~3.0 (uniform over the vocabulary): it learned the text


def test_checkpoint_round_trip_weights_only(tmp_path):
    m = _model()
    tok = CharTokenizer.from_texts(["abcdefghijklmnopq"])  # 6 specials + 17 = the 23 ids of _model()
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint({"kind": "pretrain", "model_args": vars(m.config).copy(), "model": m.state_dict(),
                     "vocab": tok.vocab, "iter_num": 3}, path)
    raw = torch.load(path, weights_only=True)  # plain tensors and Python types only
    assert raw["iter_num"] == 3
    m2, tok2 = model_from_checkpoint(load_checkpoint(str(tmp_path)))
    idx = torch.randint(0, 23, (1, 8))
    assert torch.equal(m(idx)[0], m2(idx)[0]) and tok2.vocab == tok.vocab
    with pytest.raises(CheckpointError, match="needs: instr"):
        load_checkpoint(path, kinds=("instr",))
    open(path, "wb").write(open(path, "rb").read()[:100])  # truncated file
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)



def test_checkpoint_loading_refuses_code_and_keeps_the_reason(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(str(path))
    # a hand-made pickle stream that calls os.system on load (GLOBAL posix.system, then REDUCE):
    # weights_only=True refuses it, and nothing runs
    path.write_bytes(f"cposix\nsystem\n(S'touch {tmp_path / 'pwned'}'\ntR.".encode())
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))
    assert not (tmp_path / "pwned").exists()

    # a file that cannot be opened says why (here a permission error; as root chmod cannot show it)
    import checkpoint

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(checkpoint, "open", denied, raising=False)
    with pytest.raises(CheckpointError, match="cannot read .*: Permission denied"):
        load_checkpoint(str(path))
    monkeypatch.undo()
    # but an OSError from torch.load is the content's (a truncated zip gives "Invalid argument")
    def einval(*a, **k):
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(torch, "load", einval)
    with pytest.raises(CheckpointError, match="not a readable checkpoint .truncated or corrupt"):
        load_checkpoint(str(path))


def test_weights_that_do_not_fit_are_a_checkpoint_error():
    m = _model()
    ck = {"kind": "pretrain", "model_args": {**vars(m.config), "n_embd": 32}, "model": m.state_dict(),
          "vocab": [str(i) for i in range(23)]}
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(ck)


def test_atomic_write_keeps_the_old_file_on_failure_and_leaves_no_tmp(tmp_path):
    path = str(tmp_path / "f.bin")
    atomic_write(path, lambda f: f.write(b"good"))

    def full_disk(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(CheckpointError, match="could not write .*No space left on device"):
        atomic_write(path, full_disk)
    assert open(path, "rb").read() == b"good" and os.listdir(tmp_path) == ["f.bin"]


def test_prepare_out_dir_fails_under_a_regular_file_and_clears_stale_tmp(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="cannot write to out_dir"):
        prepare_out_dir(str(tmp_path / "afile" / "out"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "last.pt.tmp").write_bytes(b"left by a killed run")
    prepare_out_dir(str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []


def test_the_shared_training_rules():
    m = _model(bias=True)
    groups = param_groups(m.parameters(), 0.1, lr=0.5)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"]) and decay["lr"] == 0.5
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))
    # warmup rises linearly, the cosine ends at min_lr, and stays there
    lrs = [lr_schedule(it, 1.0, 0.1, 10, 110) for it in range(130)]
    assert lrs[0] < lrs[5] < lrs[9] < 1.0 and max(lrs) == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1) and lrs[129] == 0.1
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert pad_batch([[1, 2, 3], [4]], -100).tolist() == [[1, 2, 3], [4, -100, -100]]
    # float16 gets a real loss scaler, every other precision a pass-through
    assert grad_scaler("cpu", "float16").is_enabled() and not grad_scaler("cpu", "float32").is_enabled()


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_cache_fill_attends_causally_among_its_own_tokens(monkeypatch, use_sdpa):
    """Filling a fresh cache is a pass without one: same logits, the window's keys written to its first
    slots, and (SDPA) the causal kernel without a mask over the empty slots; the last block writes every
    token's keys but computes the last token's output only; the next steps then attend to every slot
    through the mask."""
    m = _model(seed=6, use_sdpa=use_sdpa, **ARCHS[1])
    idx = torch.randint(0, 23, (3, 10))
    calls, mlp_rows = [], []
    for block in m.h:  # how many tokens each block's MLP computes
        block.mlp.register_forward_pre_hook(lambda mod, args: mlp_rows.append(args[0].size(1)))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0:
                        calls.append((q.size(2), k.size(2), attn_mask is None, is_causal))
                        or sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p))
    caches = [{} for _ in m.h]
    with torch.no_grad():
        filled = m.next_logits(idx, caches, torch.arange(10))
        k = caches[0]["k"].clone()  # (B, nh, block_size, hs): the 10 written slots, then zeros
        uncached = m.next_logits(idx)
        step = m.next_logits(idx[:, -1:], caches, torch.tensor([10]))
    assert torch.allclose(filled, uncached, atol=1e-5)
    assert k.shape[2] == 16 and k[:, :, :10].abs().sum() > 0 and k[:, :, 10:].abs().sum() == 0
    assert all(c["k"][:, :, :10].abs().sum() > 0 for c in caches)  # the last block's keys too
    assert mlp_rows == [10, 1, 10, 10, 1, 1]  # fill: 10 then the last token; without a cache 10 and 10; step
    assert torch.allclose(step, m.next_logits(torch.cat([idx, idx[:, -1:]], 1)), atol=1e-5)
    if use_sdpa:  # per layer: the fill (10 queries, 10 keys, causal; the last block: 1 query, no mask needed),
        # the pass without a cache (causal), the step (1 query over every slot, masked)
        assert calls[:6] == [(10, 10, True, True), (1, 10, True, False)] + [(10, 10, True, True)] * 2 + \
            [(1, 16, False, False)] * 2
    else:
        assert calls == []


def test_device_names_and_auto_dtype(monkeypatch):
    """--device: a GPU's number is checked (mps:0 and cuda:N are one line, not a traceback from
    model.to); --dtype=auto takes bf16 only where the GPU computes it natively (not emulated on a T4)."""
    import checkpoint
    for name, fragment in [("mps:0", "no Apple GPU"), ("cuda:abc", "unknown device"), ("gpu", "unknown device"),
                           ("", "unknown device")]:
        if name.startswith("mps") and torch.backends.mps.is_available():
            continue
        with pytest.raises(ValueError, match=fragment):
            checkpoint.pick_device(name)
    assert checkpoint.pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert checkpoint.pick_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="no CUDA device 1: this machine has 1"):
        checkpoint.pick_device("cuda:1")
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(
        including_emulation) or including_emulation)
    assert checkpoint.resolve_dtype("cuda", "auto") == "float32" and asked == [False]
    assert checkpoint.resolve_dtype("cpu", "auto") == "float32"


def test_a_one_token_block_still_generates():
    """block_size=1 (a bigram model, a fair lesson) slides its window by one token, not by none."""
    m = _model(block_size=1)
    for cache in (True, False):
        out = m.generate(torch.zeros(1, 1, dtype=torch.long), 5, temperature=0.0, use_cache=cache)
        assert out.shape == (1, 6)
