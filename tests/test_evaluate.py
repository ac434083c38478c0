"""evaluate.py: the windowed scoring equals a token-by-token computation, bits per byte from the CLI
(table and JSON, val splits and text files in any encoding, <unk> reported), instruction files (ours
and Alpaca), and one-line errors."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, assert_one_line_error, run_many
from evaluate import normalize, score
from model import GPT, GPTConfig


@pytest.mark.parametrize("block, n", [(64, 40), (16, 100), (15, 61)])
def test_windowed_score_equals_token_by_token(block, n):
    """Every target from `first` on is scored exactly once, with the context its window gives it: the
    whole prefix in the first window, then the last block tokens before the window's end."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=block, n_layer=1, n_head=2, n_embd=16)).eval()
    ids = torch.randint(0, 11, (n,)).tolist()
    first = 2
    nats, count = score(model, ids, first, torch.autocast("cpu", enabled=False), batch_size=3)
    assert count == n - first
    # the same contexts, one forward per target, no batching: first window ends at block + 1, then
    # windows of block // 2 targets each, whose inputs are the block tokens before their end
    expected, end = 0.0, min(n, block + 1)
    spans = [(0, first, end)]
    while end < n:
        t, end = end, min(end + block // 2, n)
        spans.append((max(0, end - 1 - block), t, end))
    for start, t0, e in spans:
        for t in range(t0, e):
            with torch.no_grad():
                logits, _ = model(torch.tensor([ids[start:t]]))
            expected += F.cross_entropy(logits[0, -1:], torch.tensor([ids[t]])).item()
    assert nats == pytest.approx(expected, rel=1e-4)
    if block >= n:  # one window: the plain sum over the whole sequence
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids[:-1]]))
        full = F.cross_entropy(logits[0, first - 1:], torch.tensor(ids[first:]), reduction="sum").item()
        assert nats == pytest.approx(full, rel=1e-4)


def test_normalize_for_exact_match():
    assert normalize("¡La capital es San José!") == normalize("la capital es san jose") == "la capital es san jose"
    assert normalize("Niño.") != normalize("nino")  # ñ is a letter of its own


def test_kinds_are_judged_by_key_words_only_where_the_expected_answer_has_them():
    """The shipped kinds accept any wording that names the right fact; another data set's "abstain" or
    "fact:perro" (in English, say) is matched exactly, not against Spanish key words."""
    from evaluate import is_correct
    perro = "Los perros son caninos: pertenecen a la familia de los cánidos (Canidae)."
    assert is_correct("fact:perro", "Son cánidos, de la familia Canidae.", perro)
    assert not is_correct("fact:perro", "Son cánidos y felinos.", perro)
    assert is_correct("followup/abstain", "No lo sé, de verdad.", "No lo sé. No tengo información sobre eso.")
    assert is_correct("abstain", "I don't know.", "I don't know.")  # was: never correct (no "no lo se")
    assert not is_correct("abstain", "No lo sé.", "I don't know.")
    assert is_correct("fact:perro", "Dogs are canines.", "Dogs are canines.")
    assert not is_correct("fact:perro", "Los perros son caninos.", "Dogs are canines.")


def test_bits_per_byte_from_the_cli(tiny_run):
    work = tiny_run
    text = "El perro es un canino y el gato es un felino. " * 20
    (work / "eval_utf8.txt").write_text(text, encoding="utf-8")
    (work / "eval_latin1.txt").write_bytes(text.encode("latin-1"))
    (work / "eval_unk.txt").write_text("El perro 犬 es un canino. " * 10, encoding="utf-8")
    table, js = run_many([
        ("evaluate.py", "--out_dir=out", "--data=tiny", "--text=eval_utf8.txt,eval_latin1.txt,eval_unk.txt"),
        ("evaluate.py", "--out_dir=out,out", "--text=eval_utf8.txt", "--json=True")], cwd=work)
    assert table.returncode == 0, table.stderr
    assert "bits per byte" in table.stdout and "tiny (val split)" in table.stdout
    rows = {line.split()[1]: line.split() for line in table.stdout.splitlines() if line.startswith("out ")}
    # the same text in two encodings is the same text: the same score
    assert rows["eval_utf8.txt"][5] == rows["eval_latin1.txt"][5]
    assert rows["eval_utf8.txt"][6] == "0.00%" and float(rows["eval_unk.txt"][6].rstrip("%")) > 0  # <unk> share
    assert js.returncode == 0, js.stderr
    out = json.loads(js.stdout)
    assert len(out) == 2 and out[0]["bits_per_byte"] == out[1]["bits_per_byte"]  # two checkpoints, side by side
    r = out[0]
    assert r["bytes"] == len(text.encode("utf-8")) and r["tokens"] == len(text)  # characters: one token each
    assert r["bits_per_byte"] == pytest.approx(r["nats_per_token"] * r["tokens"] / (math.log(2) * r["bytes"]))
    # trained: well under the ~7 bits per byte of a uniform guess over the 128-entry vocabulary (the tiny run
    # measures ~3.8; untrained, it scores ~7.0)
    assert 0 < r["bits_per_byte"] < 5


def test_instruction_files_ours_and_alpaca(out_root, tmp_path):
    alpaca = [{"instruction": "¿Los perros son caninos?", "input": "", "output":
               "Los perros son caninos: pertenecen a la familia de los cánidos (Canidae)."},
              {"instruction": "Translate to English", "input": "gato", "output": "cat"},
              {"instruction": "¿Cuánto cuesta?", "input": "", "output": "£3 😀"}]  # characters the vocabulary lacks
    (tmp_path / "alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False), encoding="utf-8")
    test = os.path.join(ROOT, "data", "es", "instructions", "test.jsonl")
    ours, alp, table = run_many([
        ("evaluate.py", f"--out_dir={out_root}/out-instr", f"--instructions={test}", "--max_examples=20"),
        ("evaluate.py", f"--out_dir={out_root}/out-instr", f"--instructions={tmp_path}/alpaca.json", "--json=True"),
        ("evaluate.py", f"--out_dir={out_root}/out-instr", f"--instructions={tmp_path}/alpaca.json")])
    # without kinds the table is the overall row alone (no "(no kind)" row repeating it)
    assert table.returncode == 0 and "\noverall " in table.stdout and "(no kind)" not in table.stdout, table.stdout
    assert ours.returncode == 0, ours.stderr
    assert "bits per byte" in ours.stdout and "exact match after normalization" in ours.stdout
    assert "facts (3)" in ours.stdout and "abstain" in ours.stdout and "expected:" in ours.stdout
    assert alp.returncode == 0, alp.stderr
    row = json.loads(alp.stdout)[0]
    assert row["examples"] == row["answered"] == 3 and 0 <= row["exact_match"] <= 1 and row["bits_per_byte"] > 0
    assert row["examples_with_unk"] == 1 and "(1 hold characters" in table.stdout
    assert list(row["by_kind"]) == ["(no kind)"]


def test_bad_inputs_one_line(out_root, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("canción".encode("latin-1"))
    cls = tmp_path / "cls"
    cls.mkdir()
    ck = torch.load(os.path.join(out_root, "out-pre", "ckpt.pt"), weights_only=True)
    torch.save({**ck, "kind": "cls"}, cls / "ckpt.pt")
    cases = [(("evaluate.py", "--out_dir=nowhere", "--text=latin1.txt"), "no checkpoint"),
             (("evaluate.py", f"--out_dir={cls}", "--text=latin1.txt"), "classifier"),
             (("evaluate.py", f"--out_dir={out_root}/out-pre", "--instructions=x.jsonl"), "not found"),
             (("evaluate.py", f"--out_dir={out_root}/out-pre",
               f"--instructions={ROOT}/data/es/instructions/test.jsonl"), "needs an instruction checkpoint"),
             (("evaluate.py", f"--out_dir={out_root}/out-pre", "--text=missing.txt"), "not found"),
             (("evaluate.py", f"--out_dir={out_root}/out-pre", "--text=latin1.txt", "--encoding=utf-8"),
              "cannot be decoded"),
             (("evaluate.py", f"--out_dir={out_root}/out-pre", "--data=nodata"), "no usable prepared data"),
             (("evaluate.py", f"--out_dir={out_root}/out-pre", "--text=latin1.txt", "--max_chars=-5"),
              "--max_chars must be >= 0")]
    for p, (args, fragment) in zip(run_many([c for c, _ in cases], cwd=tmp_path), cases):
        assert fragment in assert_one_line_error(p), (args, p.stderr)
    assert sorted(os.listdir(tmp_path)) == ["cls", "latin1.txt"]  # nothing written
