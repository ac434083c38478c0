"""The foundation: tokenizer, configurator, model, checkpoints, and the pretraining scripts."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_one_line_error, run
from configurator import configure
from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from model import GPT, GPTConfig
from tokenizer import SPECIALS, CharTokenizer, clean_text

# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_specials_first():
    tok = CharTokenizer.from_texts(["¿Los perros son caninos? ¡Sí, señor!\n\tÜ"])
    text = "¿Los perros son caninos? ¡Sí, señor!"
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab[:5] == SPECIALS
    assert all(i >= len(SPECIALS) for i in tok.encode(text))


def test_unseen_characters_become_unk():
    tok = CharTokenizer.from_texts(["abc"])
    ids = tok.encode("aZb😀")
    assert ids[1] == tok.unk_id and ids[3] == tok.unk_id
    assert ids[0] != tok.unk_id and ids[2] != tok.unk_id


def test_special_token_text_is_plain_characters():
    tok = CharTokenizer.from_texts(["<resp> <instr> <eos> <pad>"])
    ids = tok.encode("<resp>")
    assert len(ids) == 6
    assert tok.resp_id not in ids and not set(ids) & set(range(len(SPECIALS)))
    ids, _ = tok.encode_instruction("di <resp> hola", "ok")
    assert ids.count(tok.resp_id) == 1 and ids.count(tok.instr_id) == 1 and ids[-1] == tok.eos_id


def test_clean_text():
    assert clean_text("a\r\nb\rc\x00d\x07\te") == "a\nb\ncd\te"
    assert clean_text("Cafe\u0301") == "Café"  # NFC: e + combining accent -> é
    assert clean_text("ÁRBOL", lowercase=True) == "árbol"


# ---------------------------------------------------------------- configurator


def _cfg():
    return {"batch_size": 12, "learning_rate": 1e-3, "out_dir": "out", "compile": False, "top_k": None}


def test_configurator_parses_flags_and_files(tmp_path):
    cfgfile = tmp_path / "c.py"
    cfgfile.write_text("batch_size = 4\nimport math\nlearning_rate = math.pi / 10\n")
    g = _cfg()
    out = configure(g, [str(cfgfile), "--out_dir=run-1", "--compile=true", "--learning_rate=1", "--top_k=5"])
    assert g["batch_size"] == 4 and abs(g["learning_rate"] - 1.0) < 1e-12 and isinstance(g["learning_rate"], float)
    assert g["out_dir"] == "run-1" and g["compile"] is True and g["top_k"] == 5
    assert out["batch_size"] == 4
    g = _cfg()
    configure(g, ["--compile=False", "--out_dir=[1, 2]"])
    assert g["compile"] is False and g["out_dir"] == "[1, 2]"


@pytest.mark.parametrize("argv, fragment", [
    (["--batch_sise=3"], "did you mean: batch_size"),
    (["--batch_size=3.5"], "expects an int"),
    (["--learning_rate=fast"], "expects a float"),
    (["--compile=yes"], "expects a bool"),
    (["--batch_size"], "--key=value"),
    (["no_such_config.py"], "config file not found"),
])
def test_configurator_errors(argv, fragment, capsys):
    with pytest.raises(SystemExit) as e:
        configure(_cfg(), argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_configurator_never_evaluates_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    g = _cfg()
    configure(g, [f"--out_dir=__import__('os').system('touch {marker}')"])
    assert not marker.exists() and g["out_dir"].startswith("__import__")
    with pytest.raises(SystemExit):
        configure(_cfg(), [f"--batch_size=__import__('os').system('touch {marker}')"])
    assert not marker.exists()


def test_configurator_rejects_unknown_key_in_config_file(tmp_path, capsys):
    cfgfile = tmp_path / "c.py"
    cfgfile.write_text("learning_rat = 0.1\n")
    with pytest.raises(SystemExit) as e:
        configure(_cfg(), [str(cfgfile)])
    assert e.value.code == 2 and "learning_rate" in capsys.readouterr().err


# ---------------------------------------------------------------- model


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


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_options_explicit_and_sdpa_agree(arch):
    m1, m2 = _model(use_sdpa=True, **arch), _model(use_sdpa=False, **arch)
    m2.load_state_dict(m1.state_dict())
    idx = torch.randint(0, 23, (2, 16))
    assert torch.allclose(m1(idx)[0], m2(idx)[0], atol=1e-5)
    if arch:
        assert m1.wpe is None and m1.lm_head.weight is not m1.wte.weight


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("prompt_len", [1, 5, 16, 20])
def test_kv_cache_greedy_equals_uncached_past_block_size(prompt_len, arch):
    m = _model(seed=3, **arch)
    idx = torch.randint(0, 23, (2, prompt_len))
    a = m.generate(idx, 40, temperature=0.0, use_cache=True)  # 40 new tokens >> block_size 16
    b = m.generate(idx, 40, temperature=0.0, use_cache=False)
    assert a.shape == (2, prompt_len + 40)
    assert torch.equal(a, b)


def test_generate_stop_token_and_sampling_controls():
    m = _model(seed=4)
    idx = torch.zeros((1, 3), dtype=torch.long)
    greedy = m.generate(idx, 30, temperature=0.0)
    stop = int(greedy[0, 5])
    out = m.generate(idx, 30, temperature=0.0, stop_token=stop)
    assert out[0, -1].item() == stop and out.size(1) <= greedy.size(1)
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
    opt = m.configure_optimizer(0.0, 3e-3, (0.9, 0.99), "cpu")
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
    tok = CharTokenizer.from_texts(["abcdefghijklmnopqr"])
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


# ---------------------------------------------------------------- scripts end to end


def test_train_writes_checkpoint_log_and_resumes(tiny_run, tmp_path):
    work = tiny_run
    ckpt = torch.load(work / "out" / "ckpt.pt", weights_only=True)
    assert ckpt["kind"] == "pretrain" and ckpt["iter_num"] == 40 and len(ckpt["vocab"]) == ckpt["model_args"]["vocab_size"]
    log = [json.loads(line) for line in open(work / "out" / "log.jsonl")]
    assert any("val_loss" in r for r in log) and any("tokens_per_s" in r for r in log)
    evals = [r["val_loss"] for r in log if "val_loss" in r]
    assert evals[-1] < 3.5  # it learned: uniform guessing is ln(vocab) ~ 4.8
    # resume continues from the saved iteration up to the new max_iters
    p = run("train.py", os.path.join(ROOT, "config", "test_tiny.py"), "--dataset=tiny", "--out_dir=out",
            "--init_from=resume", "--max_iters=60", cwd=work)
    assert p.returncode == 0, p.stderr
    assert "resuming from iteration 40" in p.stdout
    last = torch.load(work / "out" / "last.pt", weights_only=True)
    assert last["iter_num"] == 60
    # scratch into a dir holding a checkpoint refuses, and leaves the checkpoint alone
    before = hashlib.sha256((work / "out" / "ckpt.pt").read_bytes()).hexdigest()
    p = run("train.py", os.path.join(ROOT, "config", "test_tiny.py"), "--dataset=tiny", "--out_dir=out", cwd=work)
    assert "already exists" in assert_one_line_error(p)
    assert hashlib.sha256((work / "out" / "ckpt.pt").read_bytes()).hexdigest() == before


def test_sample_streams_text(tiny_run):
    p = run("sample.py", "--out_dir=out", "--start=El perro", "--max_new_tokens=30", "--num_samples=2", cwd=tiny_run)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("El perro") == 2 and p.stdout.count("---------------") == 2
    (tiny_run / "start.txt").write_text("El gato", encoding="utf-8")
    p2 = run("sample.py", "--out_dir=out", "--start=FILE:start.txt", "--max_new_tokens=20", "--seed=1", cwd=tiny_run)
    p3 = run("sample.py", "--out_dir=out", "--start=FILE:start.txt", "--max_new_tokens=20", "--seed=1", cwd=tiny_run)
    assert p2.returncode == 0 and p2.stdout.startswith("El gato") and p2.stdout == p3.stdout  # deterministic


def _prepared(work, dataset):
    meta = json.load(open(work / "data" / dataset / "meta.json", encoding="utf-8"))
    train = np.fromfile(work / "data" / dataset / "train.bin", dtype=np.uint16)
    val = np.fromfile(work / "data" / dataset / "val.bin", dtype=np.uint16)
    return meta, train, val


def test_prepare_txt_jsonl_parquet_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = ["Hola mundo, ¿qué tal?\r\n" * 40, "Árbol y canción.\x07\n" * 40]
    (tmp_path / "a.txt").write_text(docs[0], encoding="utf-8")
    with open(tmp_path / "a.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    pq.write_table(pa.table({"text": docs, "other": [1, 2]}), tmp_path / "a.parquet")
    (tmp_path / "folder").mkdir()
    for i, d in enumerate(docs):
        (tmp_path / "folder" / f"{i}.txt").write_text(d, encoding="utf-8")
    for src, name in (("a.txt", "t"), ("a.jsonl", "j"), ("a.parquet", "p"), ("folder", "f")):
        p = run("prepare.py", f"--input={src}", f"--dataset={name}", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert "vocabulary" in p.stdout and "train" in p.stdout
        meta, train, val = _prepared(tmp_path, name)
        tok = CharTokenizer(meta["vocab"])
        text = tok.decode(np.concatenate([train, val]).tolist())
        assert "\r" not in text and "\x07" not in text and "¿qué tal?" in text
        assert len(val) < len(train) and meta["vocab"][:5] == SPECIALS
    meta_j, _, _ = _prepared(tmp_path, "j")
    meta_f, _, _ = _prepared(tmp_path, "f")
    assert meta_j["train_tokens"] == meta_f["train_tokens"]  # same two documents, same split
    # every character of the shipped task data is in the vocabulary, whatever the corpus
    shipped = open(os.path.join(ROOT, "data/es/instructions/train.jsonl"), encoding="utf-8").read()
    assert set(json.loads(shipped.splitlines()[0])["response"]) <= set(meta_j["vocab"])


def test_prepare_named_download_from_local_file(tmp_path):
    src = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare", "input.txt")
    if not os.path.isfile(src):  # CI and sessions have it; make a stand-in anywhere else
        pytest.skip("tinyshakespeare not present")
    url = "file://" + os.path.abspath(src)
    p = run("prepare.py", "--dataset=shakespeare_char", f"--download_url={url}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    meta, train, val = _prepared(tmp_path, "shakespeare_char")
    assert meta["chars"] == 1115394 and abs(len(val) / (len(train) + len(val)) - 0.1) < 0.01
    p = run("prepare.py", "--dataset=shakespeare_char", cwd=tmp_path)  # cached: no network needed
    assert p.returncode == 0 and "using cached" in p.stdout
    # a wrong file (bad checksum) is refused and not saved
    (tmp_path / "bad.txt").write_text("not shakespeare", encoding="utf-8")
    p = run("prepare.py", "--dataset=shakespeare_char", "--data_root=d2", f"--download_url=file://{tmp_path}/bad.txt",
            cwd=tmp_path)
    assert "sha256" in assert_one_line_error(p) and not (tmp_path / "d2").exists()


def test_prepare_download_offline_explains(tmp_path):
    p = run("prepare.py", "--dataset=shakespeare_char", "--download_url=file:///nonexistent/input.txt", cwd=tmp_path)
    line = assert_one_line_error(p)
    assert "--input" in line and "input.txt" in line


# ---------------------------------------------------------------- bad input


def test_bad_inputs_give_one_line(tmp_path, tiny_run):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02abc")
    (tmp_path / "latin1.txt").write_bytes("canción".encode("latin-1"))
    (tmp_path / "short.txt").write_text("hola mundo " * 5, encoding="utf-8")
    cases = [
        (("prepare.py", "--input=missing.txt"), "not found"),
        (("prepare.py", "--input=empty.txt"), "no text"),
        (("prepare.py", "--input=bin.txt"), "binary"),
        (("prepare.py", "--input=latin1.txt"), "UTF-8"),
        (("prepare.py", "--dataset=nope"), "unknown dataset"),
        (("train.py", "--max_itters=3"), "did you mean: max_iters"),
        (("train.py", "--batch_size=big"), "expects an int"),
        (("train.py", "--dataset=nothing"), "no prepared data"),
        (("train.py", "--device=cuda"), "cuda"),
        (("sample.py", "--out_dir=nowhere"), "no checkpoint"),
        (("sample.py", f"--out_dir={tiny_run / 'out'}", "--prompt=hola"), "--start"),
    ]
    for args, fragment in cases:
        if args == ("train.py", "--device=cuda") and torch.cuda.is_available():
            continue
        assert fragment in assert_one_line_error(run(*args, cwd=tmp_path)), args
    p = run("prepare.py", "--input=short.txt", "--dataset=short", cwd=tmp_path)
    assert p.returncode == 0
    line = assert_one_line_error(run("train.py", "--dataset=short", "--block_size=64", cwd=tmp_path))
    assert "too short" in line and not (tmp_path / "out").exists()
