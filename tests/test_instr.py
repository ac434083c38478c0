"""Instruction tuning: the loss mask, padding, a tiny end-to-end run, sample.py's instruction mode."""
import json
import os

import torch

from conftest import ROOT, assert_one_line_error, run
from checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from model import GPT, GPTConfig, answer_stream
from tokenizer import BASE_CHARS, CharTokenizer

PAIRS = [("¿Los perros son caninos?", "Sí, los perros son caninos."),
         ("¿Cuál es la capital de Costa Rica?", "San José."),
         ("¿Qué hora es?", "No lo sé.")]


def test_loss_mask_covers_exactly_response_and_eos():
    tok = CharTokenizer.from_texts([BASE_CHARS])
    ids, cut = tok.encode_instruction("hola", "sí")
    assert cut == 0 and ids == [tok.instr_id, *tok.encode("hola"), tok.resp_id, *tok.encode("sí"), tok.eos_id]
    # the same recipe finetune_instr.py uses: targets are ids[1:], prompt positions ignored
    resp_pos = ids.index(tok.resp_id)
    y = ids[1:]
    y[:resp_pos] = [-100] * resp_pos
    kept = [t for t in y if t != -100]
    assert kept == tok.encode("sí") + [tok.eos_id]
    # truncation keeps the end of a long prompt and the whole response
    ids, cut = tok.encode_instruction("x" * 50 + "¿pregunta?", "respuesta", max_len=30)
    assert len(ids) == 30 and cut == (1 + 60 + 1 + 9 + 1) - 30  # <instr> prompt <resp> response <eos>
    assert tok.decode(ids).endswith("¿pregunta?respuesta")


def _make_base(tmp_path, block_size=64):
    tok = CharTokenizer.from_texts([BASE_CHARS + "".join(p + r for p, r in PAIRS)])
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(tok), block_size=block_size, n_layer=2, n_head=2, n_embd=48, dropout=0.0)
    m = GPT(GPTConfig(**cfg))
    base = tmp_path / "base"
    base.mkdir()
    save_checkpoint({"kind": "pretrain", "model_args": cfg, "model": m.state_dict(), "vocab": tok.vocab,
                     "history": [{"iter": 0, "val_loss": 4.0}]}, str(base / "ckpt.pt"))
    return base


def test_tiny_finetune_memorizes_three_pairs_and_sample_answers(tmp_path):
    base = _make_base(tmp_path)
    with open(tmp_path / "train.jsonl", "w", encoding="utf-8") as f:
        for p, r in PAIRS * 4:
            f.write(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n")
    # Alpaca format for the held-out file, to exercise that reader too
    json.dump([{"instruction": p, "input": "", "output": r} for p, r in PAIRS],
              open(tmp_path / "test.json", "w", encoding="utf-8"), ensure_ascii=False)
    p = run("finetune_instr.py", f"--init_from={base}", "--data=train.jsonl", "--test_data=test.json",
            "--out_dir=oi", "--max_iters=300", "--eval_interval=100", "--batch_size=8", "--learning_rate=3e-3",
            "--dropout=0.0", "--val_fraction=0.0", "--device=cpu", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "overall" in p.stdout
    ckpt = load_checkpoint(str(tmp_path / "oi"), kinds=("instr",))
    assert ckpt["kind"] == "instr" and ckpt["pretrain_history"] == [{"iter": 0, "val_loss": 4.0}]
    model, tok = model_from_checkpoint(ckpt)
    for prompt, response in PAIRS:
        assert "".join(answer_stream(model, tok, prompt, 60)) == response
    answers = [json.loads(line) for line in open(tmp_path / "oi" / "eval_answers.jsonl", encoding="utf-8")]
    assert [a["answer"] for a in answers] == [r for _, r in PAIRS]
    # sample.py: one --prompt, then several questions on stdin, and the raw trace
    p = run("sample.py", "--out_dir=oi", f"--prompt={PAIRS[1][0]}", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == PAIRS[1][1], p.stderr
    p = run("sample.py", "--out_dir=oi", cwd=tmp_path, input=f"{PAIRS[0][0]}\n\n{PAIRS[2][0]}\n")
    assert p.returncode == 0 and p.stdout.split("\n")[:2] == [PAIRS[0][1], PAIRS[2][1]]
    p = run("sample.py", "--out_dir=oi", f"--prompt={PAIRS[2][0]}", "--show_raw=True", cwd=tmp_path)
    assert f"<instr>{PAIRS[2][0]}<resp>{PAIRS[2][1]}<eos>" in p.stdout
    # eval_only gives the same table from the saved checkpoint
    p = run("finetune_instr.py", "--eval_only=True", "--out_dir=oi", "--test_data=test.json", cwd=tmp_path)
    assert p.returncode == 0 and "overall" in p.stdout


def test_prompt_with_special_token_text_is_plain(tmp_path):
    tok = CharTokenizer.from_texts([BASE_CHARS])
    ids, _ = tok.encode_instruction("repite <resp> y <eos>", "ok")
    assert ids.count(tok.resp_id) == 1 and ids.count(tok.eos_id) == 1


def test_malformed_jsonl_reports_line_numbers(tmp_path):
    base = _make_base(tmp_path)
    lines = ['{"prompt": "a", "response": "b"}', "{not json", '{"prompt": "a"}', "", '{"prompt": "c", "response": "d"}']
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = run("finetune_instr.py", f"--init_from={base}", "--data=bad.jsonl", "--out_dir=ob", cwd=tmp_path)
    line = assert_one_line_error(p)
    assert "line 2, 3" in line and not (tmp_path / "ob").exists()


def test_collate_pads_and_ignores(tmp_path):
    # dynamic padding: an uneven batch is padded to its longest example, and padding never
    # changes the loss of the real tokens (it sits after them and is ignored)
    tok = CharTokenizer.from_texts([BASE_CHARS])
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=len(tok), block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    ids, _ = tok.encode_instruction("hola", "que tal")
    rp = ids.index(tok.resp_id)
    x, y = ids[:-1], [-100] * rp + ids[rp + 1:]
    X1, Y1 = torch.tensor([x]), torch.tensor([y])
    X2 = torch.tensor([x + [tok.pad_id] * 9])
    Y2 = torch.tensor([y + [-100] * 9])
    assert torch.allclose(m(X1, Y1)[1], m(X2, Y2)[1], atol=1e-6)


def test_ema_saves_the_weight_average(tmp_path):
    # --ema=0 saves the last step's weights; a very slow average (0.9999) barely leaves the start,
    # so its saved weights sit ~300x closer to the base than the last step's do
    base = _make_base(tmp_path)
    with open(tmp_path / "train.jsonl", "w", encoding="utf-8") as f:
        for p, r in PAIRS * 4:
            f.write(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n")
    start = load_checkpoint(str(base))["model"]
    moved = {}
    for ema in ("0.0", "0.9999"):
        p = run("finetune_instr.py", f"--init_from={base}", "--data=train.jsonl", "--test_data=", f"--ema={ema}",
                f"--out_dir=o{ema}", "--max_iters=30", "--eval_interval=30", "--batch_size=8",
                "--learning_rate=3e-3", "--val_fraction=0.0", "--device=cpu", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        saved = load_checkpoint(str(tmp_path / f"o{ema}"), kinds=("instr",))["model"]
        moved[ema] = sum((saved[k] - start[k]).norm().item() for k in start)
    assert moved["0.0"] > 0 and moved["0.9999"] < moved["0.0"] / 30, moved
    line = assert_one_line_error(run("finetune_instr.py", f"--init_from={base}", "--data=train.jsonl", "--ema=1.0",
                                     "--out_dir=oe", cwd=tmp_path))
    assert "--ema must be in [0, 1)" in line and not (tmp_path / "oe").exists()
