"""finetune_cls.py: text classification on the GPT backbone (tiny random backbones, seconds each)."""
import json
import os
import random
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, assert_one_line_error
from checkpoint import load_checkpoint, save_checkpoint
from model import GPT, GPTConfig
from tokenizer import SPECIALS

VOCAB = SPECIALS + list(" abcdefghijklmnopqrstuvwxyzñ.,")
FAST = ["--device=cpu", "--seed=7"]


def make_backbone(path, block_size=32, seed=0):
    """A tiny random 'pretrained' GPT checkpoint in the directory path (no training: a second)."""
    torch.manual_seed(seed)
    args = dict(vocab_size=len(VOCAB), block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    model = GPT(GPTConfig(**args))
    path.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"kind": "pretrain", "model_args": args, "model": model.state_dict(), "vocab": VOCAB,
                     "config": {}, "iter_num": 0, "best_val_loss": 0.0, "history": []}, str(path / "ckpt.pt"))
    return path


def make_classifier(path, base, pool, seed=0):
    """A 'cls' checkpoint written by hand (the documented format): the base backbone plus a random head
    large enough that the probabilities stay far from 0 and 1, so any change in the pooled vector shows."""
    ckpt = load_checkpoint(str(base))
    gen = torch.Generator().manual_seed(seed)
    head = {"head.weight": torch.randn(3, 16, generator=gen) * 0.3, "head.bias": torch.zeros(3)}
    path.mkdir(parents=True, exist_ok=True)
    save_checkpoint({**ckpt, "kind": "cls", "model": {**ckpt["model"], **head}, "labels": ["x", "y", "z"],
                     "label_counts": [1, 1, 1], "pool": pool}, str(path / "ckpt.pt"))


# one thread per run: these tiny models gain nothing from a second one, and a busy machine makes
# two-thread runs stall on each other
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "finetune_cls.py"), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=240)


def run_all(cases, cwd, jobs=2):
    """Run finetune_cls.py once per argument list, two at a time: start-up (importing torch) dominates
    these short runs, and two of them overlap well on 2 cores."""
    out = []
    for i in range(0, len(cases), jobs):
        procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "finetune_cls.py"), *args], cwd=cwd, env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args in cases[i:i + jobs]]
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def ab_rows(n, seed):
    """Texts of only 'a's (label 'zeta') or only 'b's (label 'alfa'), 1 to 45 characters: some are
    longer than block_size=32 and get truncated. Labels are named so that sorted != first seen."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ch, label = ("a", "zeta") if i % 2 == 0 else ("b", "alfa")
        rows.append((ch * rng.randint(1, 45), label))
    return rows


def write_tsv(path, rows, header=("text", "label")):
    path.write_text("\t".join(header) + "\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows), encoding="utf-8")
    return path


def parse_scores(stdout, row="model"):
    m = re.search(rf"^{row}\s+([\d.]+)\s+([\d.]+)", stdout, re.M)
    assert m, stdout
    return float(m.group(1)), float(m.group(2))


def backbone_of(ckpt):
    return {k: v for k, v in ckpt["model"].items() if not k.startswith("head.")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny backbone, the a/b task as one CSV file (split by the script), and a trained classifier."""
    d = tmp_path_factory.mktemp("cls")
    make_backbone(d / "base")
    lines = ["text,label"] + [f"{t},{lab}" for t, lab in ab_rows(200, seed=1)]
    (d / "ab.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = run("--init_from=base", "--data=ab.csv", "--out_dir=cls_last", "--pool=last",
            "--freeze=backbone", "--max_iters=50", "--eval_interval=25", "--learning_rate=0.02", *FAST, cwd=d)
    assert p.returncode == 0, p.stdout + p.stderr
    return d, p


def test_end_to_end_learns_separable_task_and_eval_only_agrees(env):
    d, p = env
    acc, f1 = parse_scores(p.stdout)
    assert acc >= 0.95 and f1 >= 0.95, p.stdout
    # the table has the majority baseline beside the model, per-class rows, a confusion matrix, wall time
    base_acc, base_f1 = parse_scores(p.stdout, "majority class")
    assert base_acc == pytest.approx(0.5, abs=0.05) and base_f1 < 0.5
    assert "confusion matrix" in p.stdout and re.search(r"^alfa\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+20$", p.stdout, re.M)
    assert "wall time" in p.stdout
    log = [json.loads(line) for line in (d / "cls_last" / "log.jsonl").read_text().splitlines()]
    assert [h["iter"] for h in log] == [25, 50] and all(0 <= h["val_macro_f1"] <= 1 for h in log)
    # 200 rows, 70/10/20 stratified: 40 test texts, 20 of each label
    assert "140 train, 20 val, 40 test" in p.stdout
    e = run("--eval_only=True", "--out_dir=cls_last", "--data=ab.csv", *FAST, cwd=d)
    assert e.returncode == 0, e.stderr
    assert parse_scores(e.stdout) == (acc, f1)


def test_label_mapping_round_trips_through_checkpoint(env):
    d, _ = env
    ckpt = load_checkpoint(str(d / "cls_last"), kinds=("cls",))
    assert ckpt["kind"] == "cls" and ckpt["labels"] == ["alfa", "zeta"]  # sorted names, id = position
    assert ckpt["pool"] == "last" and ckpt["label_counts"] == [70, 70]
    assert ckpt["model"]["head.weight"].shape == (2, 16) and ckpt["model"]["head.bias"].shape == (2,)
    assert {"iter", "val_loss", "val_accuracy", "val_macro_f1"} <= set(ckpt["history"][0])
    p = run("--out_dir=cls_last", "--predict=aaaaaaa", *FAST, cwd=d)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "zeta"  # 'a' texts were labelled zeta: id 1 maps back to its name
    probs = dict(line.split() for line in lines[1:])
    assert set(probs) == {"alfa", "zeta"} and float(probs["zeta"]) > 0.5
    assert abs(sum(map(float, probs.values())) - 1) < 1e-3
    (d / "many.txt").write_text("bbbb\n\naaa\n", encoding="utf-8")
    p = run("--out_dir=cls_last", "--predict_file=many.txt", *FAST, cwd=d)
    assert p.returncode == 0, p.stderr
    rows = [line.split("\t") for line in p.stdout.splitlines()]
    assert rows[0] == ["label", "p(alfa)", "p(zeta)", "text"]
    assert [r[0] for r in rows[1:]] == ["alfa", "zeta"] and [r[3] for r in rows[1:]] == ["bbbb", "aaa"]


SHORT = "aab ba"
LONG = "bbbbbbbbbbbbaaaaaaaabb ab"  # 25 characters, within block_size=32
TAIL = "abbaab ba abab bbaa aabab baba b"  # exactly block_size=32 characters
TRUNC = "b" * 10 + TAIL  # 42 characters: read as its last 32, which are TAIL


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_padding_and_truncation(env, pool):
    """Same text, padded to different lengths -> same probabilities; a long text keeps its end."""
    d, _ = env
    make_classifier(d / f"hand_{pool}", d / "base", pool)
    # --batch_size=2 makes the batches [SHORT, LONG] (SHORT padded by 19), [TAIL, TRUNC], [TRUNC[:32], LONG]
    # and [SHORT] alone (no padding)
    texts = [SHORT, LONG, TAIL, TRUNC, TRUNC[:32], LONG, SHORT]
    (d / f"pad_{pool}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    p = run(f"--out_dir=hand_{pool}", f"--predict_file=pad_{pool}.txt", "--batch_size=2",
            *FAST, cwd=d)
    assert p.returncode == 0, p.stderr
    probs = [[float(x) for x in line.split("\t")[1:-1]] for line in p.stdout.splitlines()[1:]]
    assert len(probs) == len(texts) and all(len(row) == 3 for row in probs), p.stdout

    def diff(i, j):
        return max(abs(x - y) for x, y in zip(probs[i], probs[j]))

    assert diff(0, 6) < 2e-4, probs  # padded vs not padded
    assert diff(3, 2) < 2e-4, probs  # the long text is read as its end...
    assert diff(3, 4) > 1e-2, probs  # ...not as its start
    assert diff(0, 1) > 1e-2, probs  # (the probabilities do depend on the text: the checks above mean something)


@pytest.fixture(scope="module")
def runs(env):
    """Short runs with the backbone (partly) trainable, on the other data formats."""
    d, _ = env
    rows = ab_rows(120, seed=2)
    (d / "ab.jsonl").write_text("".join(json.dumps({"t": t, "y": lab}) + "\n" for t, lab in rows), encoding="utf-8")
    split = d / "split"
    split.mkdir()
    for name, part in (("train", rows[:80]), ("val", rows[80:100]), ("test", rows[100:])):
        write_tsv(split / f"{name}.tsv", part)
    common = ["--init_from=base", "--pool=mean", "--eval_interval=5", "--patience=0", *FAST]
    cases = {
        "last_n": ["--data=ab.jsonl", "--text_col=t", "--label_col=y", "--freeze=last_n", "--unfreeze_last=1",
                   "--max_iters=25", "--learning_rate=0.01", "--class_weights=True"],
        "none": ["--data=split", "--freeze=none", "--max_iters=5", "--backbone_lr=1e-3"],
        "none_again": ["--data=split", "--freeze=none", "--max_iters=5", "--backbone_lr=1e-3"],
    }
    for p in run_all([[*common, *args, f"--out_dir=cls_{name}"] for name, args in cases.items()], d):
        assert p.returncode == 0, p.stdout + p.stderr
    return d, {name: load_checkpoint(str(d / f"cls_{name}"), kinds=("cls",)) for name in cases}


def test_freeze_modes_freeze_exactly_what_they_say(env, runs):
    d, ckpts = runs
    base = load_checkpoint(str(d / "base"))["model"]
    trained = {"backbone": load_checkpoint(str(d / "cls_last"))["model"], "last_n": ckpts["last_n"]["model"],
               "none": ckpts["none"]["model"]}
    for mode, state in trained.items():
        assert ckpts["none"]["config"]["freeze"] == "none" and ckpts["last_n"]["config"]["freeze"] == "last_n"
        for name, before in base.items():
            if mode == "backbone":
                should_train = False
            elif mode == "last_n":  # the last of the 2 blocks and the final LayerNorm
                should_train = name.startswith(("h.1.", "ln_f."))
            else:
                should_train = True
            changed = not torch.equal(state[name], before)
            assert changed == should_train, f"freeze={mode}: {name} {'changed' if changed else 'unchanged'}"


def test_same_seed_same_run(runs):
    _, ckpts = runs
    a, b = ckpts["none"], ckpts["none_again"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


def test_bad_data_and_wrong_checkpoints_give_one_line(env):
    d, _ = env
    write_tsv(d / "cols.tsv", ab_rows(20, 3), header=("texto", "etiqueta"))
    write_tsv(d / "one.tsv", [("aaa", "x")] * 20)
    (d / "empty.tsv").write_text("", encoding="utf-8")
    bad = d / "bad_split"
    bad.mkdir()
    rows = ab_rows(40, 4)
    write_tsv(bad / "train.tsv", rows[:24])
    write_tsv(bad / "val.tsv", rows[24:30])
    write_tsv(bad / "test.tsv", rows[30:] + [("abab", "gamma")])
    train = ["--init_from=base", "--out_dir=cls_bad", *FAST]
    good = (d / "cls_last" / "ckpt.pt").read_bytes()
    cases = [
        (["--data=cols.tsv", "--init_from=base", "--out_dir=cls_last"], "columns found: texto, etiqueta"),
        (["--data=one.tsv", *train], "only one label"),
        (["--data=empty.tsv", *train], "empty"),
        (["--data=missing.csv", *train], "not found"),
        (["--data=bad_split", *train], "'gamma'"),  # a test label never seen in training
        (["--eval_only=True", "--out_dir=cls_last", "--data=bad_split"], "'gamma'"),  # unknown at eval time
        (["--out_dir=base", "--predict=hola"], "'pretrain'"),  # wrong kind: a pretrained model, not a classifier
        (["--out_dir=cls_last", "--predict=   "], "empty --predict"),
        (["--data=ab.csv", "--init_from=base", "--out_dir=base"], "'pretrain' checkpoint"),  # never clobber it
    ]
    for (args, fragment), p in zip(cases, run_all([args for args, _ in cases], d)):
        line = assert_one_line_error(p)
        assert fragment in line, (args, line)
    assert not (d / "cls_bad").exists()  # nothing was written by the failed runs
    assert (d / "cls_last" / "ckpt.pt").read_bytes() == good  # and a good classifier was not touched
    assert load_checkpoint(str(d / "base"))["kind"] == "pretrain"
