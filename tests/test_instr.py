"""Instruction tuning: padding and the loss mask, a tiny end-to-end run, sample.py's instruction mode, bad input."""
import json
import re

import torch

from conftest import assert_one_line_error, run, run_many
from chat import answer_stream
from checkpoint import load_checkpoint, model_from_checkpoint, pad_batch, save_checkpoint
from model import GPT, GPTConfig
from tokenizer import BASE_CHARS, CharTokenizer, instruction_example

PAIRS = [("¿Los perros son caninos?", "Sí, los perros son caninos."),
         ("¿Cuál es la capital de Costa Rica?", "San José."),
         ("¿Qué hora es?", "No lo sé.")]


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
        assert "".join(text for _, text in answer_stream(model, tok, prompt, 60)) == response
    answers = [json.loads(line) for line in open(tmp_path / "oi" / "eval_answers.jsonl", encoding="utf-8")]
    assert [a["answer"] for a in answers] == [r for _, r in PAIRS]
    # sample.py: one --prompt with the raw trace, then several questions on stdin; and eval_only
    # gives the same table from the saved checkpoint
    one, again = run_many([("sample.py", "--out_dir=oi", f"--prompt={PAIRS[2][0]}", "--show_raw=True"),
                           ("finetune_instr.py", "--eval_only=True", "--out_dir=oi")],  # its run's test data
                          cwd=tmp_path)
    assert one.returncode == 0 and one.stdout.splitlines() == [PAIRS[2][1], f"[raw] <instr>{PAIRS[2][0]}<resp>{PAIRS[2][1]}<eos>"], one.stdout + one.stderr
    assert again.returncode == 0 and "overall" in again.stdout and "checkpoint's run, test.json" in again.stdout
    # --eval_only where eval_answers.jsonl cannot be written (no file may grow past 1 byte): one line
    # before the evaluation runs, not after it
    import resource
    full = run("finetune_instr.py", "--eval_only=True", "--out_dir=oi", "--test_data=test.json", cwd=tmp_path,
               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1)))
    assert "cannot write to out_dir 'oi'" in assert_one_line_error(full) and "held-out" not in full.stdout
    p = run("sample.py", "--out_dir=oi", cwd=tmp_path, input=f"{PAIRS[0][0]}\n\n{PAIRS[2][0]}\n")
    assert p.returncode == 0 and p.stdout.split("\n")[:2] == [PAIRS[0][1], PAIRS[2][1]]


def test_prompt_with_special_token_text_is_plain(tmp_path):
    tok = CharTokenizer.from_texts([BASE_CHARS])
    ids, _ = tok.encode_instruction("repite <resp> y <eos>", "ok")
    assert ids.count(tok.resp_id) == 1 and ids.count(tok.eos_id) == 1


def test_malformed_jsonl_reports_line_numbers(tmp_path):
    base = _make_base(tmp_path)
    lines = ['{"prompt": "a", "response": "b"}', "{not json", '{"prompt": "a"}', "", '{"prompt": "c", "response": "d"}']
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "good.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n',
                                         encoding="utf-8")
    (tmp_path / "one.jsonl").write_text('{"prompt": "a", "response": "b"}\n', encoding="utf-8")
    # a response longer than the window (64) alone: cut at its end, without <eos>, and said so
    (tmp_path / "long.jsonl").write_text('{"prompt": "a", "response": "%s"}\n{"prompt": "c", "response": "d"}\n'
                                         % ("b" * 80), encoding="utf-8")
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    # a backbone whose weights do not fit its own model_args (a damaged or hand-edited file)
    ck = load_checkpoint(str(base))
    ck["model_args"]["n_embd"] = 32
    (tmp_path / "misfit").mkdir()
    save_checkpoint(ck, str(tmp_path / "misfit" / "ckpt.pt"))
    # characters the backbone's vocabulary lacks: trained on as <unk>, and said so
    (tmp_path / "unk.jsonl").write_text('{"prompt": "¿Cuánto?", "response": "£3 😀"}\n{"prompt": "a", "response": "b"}\n',
                                        encoding="utf-8")
    common = [f"--init_from={base}", "--data=good.jsonl", "--max_iters=1"]
    malformed, misfit, unwritable, unk, control, no_arch, one, long = run_many([
        ("finetune_instr.py", f"--init_from={base}", "--data=bad.jsonl", "--out_dir=ob"),
        ("finetune_instr.py", *common, "--init_from=misfit", "--out_dir=om"),
        ("finetune_instr.py", *common, "--out_dir=afile/out"),
        ("finetune_instr.py", *common, "--data=unk.jsonl", "--test_data=", "--out_dir=ou", "--wrap_prob=0.5"),
        # the control: arch_from's network and tokenizer, random weights
        ("finetune_instr.py", *common, "--init_from=scratch", f"--arch_from={base}", "--test_data=", "--out_dir=os"),
        ("finetune_instr.py", *common, "--init_from=scratch", "--arch_from=nothing", "--out_dir=on"),
        ("finetune_instr.py", *common, "--data=one.jsonl", "--out_dir=o1"),
        ("finetune_instr.py", *common, "--data=long.jsonl", "--test_data=", "--out_dir=ol")], cwd=tmp_path)
    assert "one.jsonl holds 1 example(s): instruction tuning needs at least 2" in assert_one_line_error(one)
    assert not (tmp_path / "o1").exists()
    assert long.returncode == 0 and "1 response(s) longer than block_size=64 alone: cut at their end" in long.stdout
    assert control.returncode == 0, control.stderr
    scratch, pre = load_checkpoint(str(tmp_path / "os")), load_checkpoint(str(base))
    assert scratch["model_args"] == {**pre["model_args"], "dropout": 0.0} and scratch["vocab"] == pre["vocab"]
    assert not torch.equal(scratch["model"]["wte.weight"], pre["model"]["wte.weight"])  # not its weights
    assert "--arch_from=nothing: no checkpoint" in assert_one_line_error(no_arch)
    assert unk.returncode == 0 and "Spanish small talk 50% of the time (--wrap_prob=0 for" in unk.stdout, unk.stderr
    assert f"note: 1 of 2 examples hold characters {base}'s vocabulary lacks, read as <unk>: £ 😀" in unk.stdout
    assert "line 2, 3" in assert_one_line_error(malformed) and not (tmp_path / "ob").exists()
    assert "do not fit" in assert_one_line_error(misfit) and not (tmp_path / "om").exists()
    assert "cannot write to out_dir" in assert_one_line_error(unwritable)


def test_padding_never_changes_the_loss_of_real_tokens():
    """finetune_instr.py's batches: instruction_example (the loss mask) + pad_batch (inputs padded with
    <pad>, targets with -100). Padding sits after the real tokens and is ignored: the loss is the same."""
    tok = CharTokenizer.from_texts([BASE_CHARS])
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=len(tok), block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    short = instruction_example(tok, "hola", "que tal", max_len=65)[:2]
    long = instruction_example(tok, "una pregunta bastante más larga", "sí", max_len=65)[:2]
    alone = m(pad_batch([short[0]], tok.pad_id), pad_batch([short[1]], -100))[1]
    X, Y = pad_batch([short[0], long[0]], tok.pad_id), pad_batch([short[1], long[1]], -100)
    assert X[0, len(short[0]):].eq(tok.pad_id).all() and Y[0, len(short[1]):].eq(-100).all()
    logits, _ = m(X, Y)
    loss_short = torch.nn.functional.cross_entropy(logits[0], Y[0], ignore_index=-100)
    assert torch.allclose(alone, loss_short, atol=1e-6)


def test_ema_saves_the_weight_average(tmp_path):
    # --ema=0 saves the last step's weights; a very slow average (0.9999) barely leaves the start,
    # so its saved weights sit ~300x closer to the base than the last step's do
    base = _make_base(tmp_path)
    with open(tmp_path / "train.jsonl", "w", encoding="utf-8") as f:
        for p, r in PAIRS * 4:
            f.write(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n")
    start = load_checkpoint(str(base))["model"]
    moved = {}
    runs = run_many([("finetune_instr.py", f"--init_from={base}", "--data=train.jsonl", "--test_data=", f"--ema={ema}",
                      f"--out_dir=o{ema}", "--max_iters=30", "--eval_interval=30", "--batch_size=8",
                      "--learning_rate=3e-3", "--val_fraction=0.0", "--device=cpu") for ema in ("0.0", "0.9999")],
                    cwd=tmp_path)
    for ema, p in zip(("0.0", "0.9999"), runs):
        assert p.returncode == 0, p.stderr
        saved = load_checkpoint(str(tmp_path / f"o{ema}"), kinds=("instr",))["model"]
        moved[ema] = sum((saved[k] - start[k]).norm().item() for k in start)
    assert moved["0.0"] > 0 and moved["0.9999"] < moved["0.0"] / 30, moved
    line = assert_one_line_error(run("finetune_instr.py", f"--init_from={base}", "--data=train.jsonl", "--ema=1.0",
                                     "--out_dir=oe", cwd=tmp_path))
    assert "--ema must be in [0, 1)" in line and not (tmp_path / "oe").exists()


def test_a_failed_overwrite_keeps_the_earlier_model_whole(tmp_path):
    """--overwrite=True saves beside the earlier checkpoint and replaces it only when training ends: a run
    whose loss blows up leaves it byte for byte (its iteration-0 save must not have replaced it)."""
    from conftest import digest
    base = _make_base(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n"
                                                  for p, r in PAIRS * 4), encoding="utf-8")
    common = [f"--init_from={base}", "--data=train.jsonl", "--test_data=", "--out_dir=keep", "--device=cpu"]
    assert run("finetune_instr.py", *common, "--max_iters=2", cwd=tmp_path).returncode == 0
    before = digest(tmp_path / "keep")
    p = run("finetune_instr.py", *common, "--overwrite=True", "--learning_rate=1e30", "--warmup_iters=0",
            "--max_iters=20", "--eval_interval=1", cwd=tmp_path)
    assert "loss became" in assert_one_line_error(p)
    assert digest(tmp_path / "keep") == before and sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["ckpt.pt"]
    p = run("finetune_instr.py", *common, "--overwrite=True", "--max_iters=3", "--seed=2", cwd=tmp_path)
    assert p.returncode == 0 and digest(tmp_path / "keep") != before
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["ckpt.pt"]
    p = run("finetune_instr.py", "--eval_only=True", "--out_dir=keep", "--test_data= , ", cwd=tmp_path)
    assert "no test examples to evaluate" in assert_one_line_error(p)


def test_instruction_files_in_the_wrong_shape_say_so(tmp_path):
    """load_examples (finetune_instr.py and evaluate.py read through it): an example with neither prompt
    nor response is malformed, a pretty-printed single object is named as such, deep nesting is one line."""
    import pytest
    from evaluate import ExamplesError, load_examples
    (tmp_path / "empty_pairs.jsonl").write_text('{"prompt": "", "response": ""}\n{"prompt": "a", "response": "b"}\n')
    (tmp_path / "one.json").write_text(json.dumps({"instruction": "a", "input": "", "output": "b"}, indent=2))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "single.jsonl").write_text('{"prompt": "a", "response": "b"}\n')  # one line of JSONL is fine
    for name, fragment in (("empty_pairs.jsonl", "1 malformed line(s)"), ("one.json", "one JSON object over 5 lines"),
                           ("deep.json", "not valid JSON")):
        with pytest.raises(ExamplesError, match=re.escape(fragment)):
            load_examples(str(tmp_path / name))
    assert [(e.prompt, e.response) for e in load_examples(str(tmp_path / "single.jsonl"))] == [("a", "b")]


def test_ctrl_c_saves_the_best_so_far_and_exits_cleanly(tmp_path):
    """SIGINT mid-finetune (over an earlier checkpoint): the step ends, the model is evaluated and the best
    checkpoint is moved into place; exit code 130, no traceback, no ckpt.next.pt left."""
    import signal

    from conftest import interrupt_while_training
    base = _make_base(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n"
                                                  for p, r in PAIRS * 4), encoding="utf-8")
    common = [f"--init_from={base}", "--data=train.jsonl", "--test_data=", "--out_dir=sig", "--device=cpu"]
    assert run("finetune_instr.py", *common, "--max_iters=1", cwd=tmp_path).returncode == 0
    code, out, err = interrupt_while_training("finetune_instr.py", *common, "--overwrite=True", "--max_iters=100000",
                                              "--eval_interval=5", "--val_fraction=0.25", cwd=tmp_path, sig=signal.SIGINT)
    assert code == 130 and "Traceback" not in err and "stopped by a signal" in out, err
    assert sorted(p.name for p in (tmp_path / "sig").iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(str(tmp_path / "sig"), kinds=("instr",))["iter_num"] >= 5
