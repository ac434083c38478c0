"""Chat V2: the one chat template (layout, truncation at turn boundaries, the loss mask), a model
that uses the earlier turns and the system prompt, from finetune_instr's evaluation, sample.py
--chat through a pipe (/reset, /system) and the app (history toggle, system prompt, the
Clasificar tab)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, assert_one_line_error, fit_instr, run, run_many
from tokenizer import BASE_CHARS, SPECIALS, CharTokenizer, instruction_example

PERRO, GATO, NOSE = "Los perros son caninos.", "Los gatos son felinos.", "No lo sé."
SYS = "Responde solo sí o no."
# (system, history, prompt, response, kind): "¿Y los gatos?" means the cat question only after the dog one
CONVERSATIONS = [
    ("", [], "¿Los perros son caninos?", PERRO, "fact:perro"),
    ("", [], "¿Y los gatos?", NOSE, "abstain"),
    ("", [["¿Los perros son caninos?", PERRO]], "¿Y los gatos?", GATO, "followup/fact:gato"),
    ("", [["¿Qué hora es?", NOSE], ["¿Los perros son caninos?", PERRO]], "¿Y los gatos?", GATO, "followup/fact:gato"),
    (SYS, [], "¿Los perros son caninos?", "Sí.", "system/yesno"),
    ("", [], "¿Qué hora es?", NOSE, "abstain"),
]


def test_template_layout_and_truncation_at_turn_boundaries():
    tok = CharTokenizer.from_texts([BASE_CHARS])
    history = [("q1", "a1"), ("q2", "a2")]
    ids, dropped, cut = tok.encode_chat("q3", history, "sé breve", response="a3")
    assert tok.decode(ids, specials=True) == "<sys>sé breve<instr>q1<resp>a1<eos><instr>q2<resp>a2<eos><instr>q3<resp>a3<eos>"
    assert (dropped, cut) == (0, 0) and ids[0] == tok.sys_id == SPECIALS.index("<sys>")
    assert tok.encode_chat("q3")[0] == tok.encode_instruction("q3")[0]  # no system, no turns: single-question form
    full = len(ids)
    ids, dropped, cut = tok.encode_chat("q3", history, "sé breve", response="a3", max_len=full - 1)
    assert tok.decode(ids, specials=True) == "<sys>sé breve<instr>q2<resp>a2<eos><instr>q3<resp>a3<eos>"  # oldest turn out
    assert (dropped, cut) == (1, 0)
    long_q = "x" * 40 + "¿pregunta?"
    ids, dropped, cut = tok.encode_chat(long_q, history, "sé breve", max_len=30)
    text = tok.decode(ids, specials=True)
    assert dropped == 2 and text.startswith("<sys>sé breve<instr>x") and text.endswith("¿pregunta?<resp>")
    assert len(ids) == 30 and cut == len(long_q) - (30 - 1 - 8 - 2)  # the question keeps its end
    # a long system prompt gives way to a short question (the question is what gets answered)
    ids, dropped, cut = tok.encode_chat("¿y el gato?", (), "x" * 60 + " responde breve", max_len=30)
    text = tok.decode(ids, specials=True)
    assert len(ids) == 30 and text.endswith("responde breve<instr>¿y el gato?<resp>") and cut == 75 - 30 + 2 + 11 + 1
    # the loss covers the last answer and <eos> only, never the earlier turns
    x, y, _ = instruction_example(tok, "q3", "a3", 64, history, "sé breve")
    assert [t for t in y if t != -100] == tok.encode("a3") + [tok.eos_id]
    old = CharTokenizer(SPECIALS[:5] + list("abc"))  # a vocabulary from before <sys>
    assert old.sys_id is None and old.encode_chat("ab", [("a", "b")])[0][0] == old.instr_id
    with pytest.raises(ValueError, match="no <sys>"):
        old.encode_chat("ab", system="a")


@pytest.fixture(scope="module")
def chat_root(tmp_path_factory):
    """out-chat: a small model trained (in-process, full batch) on CONVERSATIONS through the template;
    out-cls: a classifier checkpoint on it; chat.jsonl: the same conversations."""
    from checkpoint import save_checkpoint
    root = tmp_path_factory.mktemp("chat")
    model, tok, cfg = fit_instr(root / "out-chat", [(p, r, [tuple(t) for t in h], s) for s, h, p, r, _ in CONVERSATIONS],
                                block_size=128, steps=300)
    with open(root / "chat.jsonl", "w", encoding="utf-8") as f:
        for s, h, p, r, k in CONVERSATIONS:
            f.write(json.dumps({"system": s, "history": h, "prompt": p, "response": r, "kind": k}, ensure_ascii=False) + "\n")
    from finetune_cls import Classifier  # a classifier on this GPT (its head untrained: the tab's plumbing is tested)
    clf = Classifier(model, 2, "mean")
    os.makedirs(root / "out-cls")
    save_checkpoint({"kind": "cls", "model_args": cfg.__dict__, "model": clf.checkpoint_state(), **tok.state(),
                     "labels": ["negativo", "positivo"], "pool": "mean"}, str(root / "out-cls" / "ckpt.pt"))
    return root


def test_evaluation_uses_history_and_system_from_the_cli(chat_root):
    p = run("finetune_instr.py", "--eval_only=True", "--out_dir=out-chat", "--test_data=chat.jsonl", cwd=chat_root)
    assert p.returncode == 0, p.stderr
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines() if line.strip()}
    assert rows["followup/fact:gato"][1:3] == ["2", "2"] and rows["system/yesno"][1:3] == ["1", "1"]
    assert rows["followup"][2:4] == ["2", "2"] and rows["overall"][1:3] == ["6", "6"]
    answers = [json.loads(line) for line in open(chat_root / "out-chat" / "eval_answers.jsonl", encoding="utf-8")]
    assert [a["turns"] for a in answers] == [0, 0, 1, 2, 0, 0] and answers[4]["system"] == SYS


def test_terminal_chat_through_a_pipe(chat_root):
    lines = ["¿Los perros son caninos?", "¿Y los gatos?", "/reset", "", "¿Y los gatos?", f"/system {SYS}",
             "¿Los perros son caninos?", "x" * 600]
    p = run("sample.py", "--out_dir=out-chat", "--chat=True", "--device=cpu", cwd=chat_root, input="\n".join(lines) + "\n")
    assert p.returncode == 0, p.stderr
    # one output line per input line, a blank one included (a script reading answers must not wait)
    assert p.stdout.splitlines() == [PERRO, GATO, "(conversación nueva)", "[error] empty prompt", NOSE,
                                     f"(sistema: {SYS}; conversación nueva)", "Sí.",
                                     "[error] prompt of 600 characters is longer than max_prompt_chars=500"]
    one, pre = run_many([("sample.py", "--out_dir=out-chat", f"--system={SYS}", "--prompt=¿Los perros son caninos?",
                          "--device=cpu"),
                         ("sample.py", "--out_dir=out-cls", "--chat=True")], cwd=chat_root)
    assert one.returncode == 0 and one.stdout.strip() == "Sí.", one.stderr
    assert "instr" in assert_one_line_error(pre)
    # bytes that are not UTF-8 on stdin read as U+FFFD: an answer, not a traceback
    for mode in ([], ["--chat=True"]):
        p = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--out_dir=out-chat", "--device=cpu", *mode],
                           input=b"hola \xff\n\xc3(\n", cwd=chat_root, capture_output=True, timeout=120)
        assert p.returncode == 0 and len(p.stdout.decode().splitlines()) == 2 and not p.stderr, p.stderr


def app_at(root, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("LLMFS_OUT_ROOT", str(root))
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=60).run()
    at.toggle(key="faq").set_value(False).run()
    return at


def ask(at, text):
    at.chat_input[0].set_value(text).run()
    assert not at.exception, [e.value for e in at.exception]
    return at.session_state["messages"][-1]


def test_app_keeps_the_conversation_and_the_system_prompt(chat_root, monkeypatch):
    at = app_at(chat_root, monkeypatch)
    at.toggle(key="raw").set_value(True).run()
    assert ask(at, "¿Los perros son caninos?")["content"] == PERRO
    m = ask(at, "¿Y los gatos?")
    assert m["content"] == GATO and m["turns"] == 1
    assert m["raw"] == f"<instr>¿Los perros son caninos?<resp>{PERRO}<eos><instr>¿Y los gatos?<resp>{GATO}<eos>"
    at.toggle(key="history").set_value(False).run()  # each question alone
    assert ask(at, "¿Y los gatos?")["content"] == NOSE
    at.toggle(key="history").set_value(True).run()
    at.button(key="new_chat").click().run()
    assert at.session_state["messages"] == []
    assert ask(at, "¿Y los gatos?")["content"] == NOSE  # a new conversation has no dog turn
    at.button(key="new_chat").click().run()
    at.text_area(key="system").input(SYS).run()
    m = ask(at, "¿Los perros son caninos?")
    assert m["content"] == "Sí." and m["raw"].startswith(f"<sys>{SYS}<instr>¿Los perros son caninos?<resp>")


def test_app_classification_tab(chat_root, monkeypatch):
    at = app_at(chat_root, monkeypatch)
    assert [t.label for t in at.tabs][:2] == [":material/forum: Chat", ":material/label: Clasificar"]
    at.text_area(key="cls_text").input("El producto llegó roto y nadie responde.").run()
    at.button(key="cls_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    r = at.session_state["cls_result"]
    assert r["checkpoint"] == "out-cls" and set(r["probs"]) == {"negativo", "positivo"}
    assert abs(sum(r["probs"].values()) - 1) < 1e-5 and r["label"] == max(r["probs"], key=r["probs"].get)
    from finetune_cls import classify, load_classifier
    ckpt, clf, tok = load_classifier(str(chat_root / "out-cls"), "cpu", cli=False)
    assert classify(clf, tok, ["El producto llegó roto y nadie responde."])[0].tolist() == pytest.approx(
        [r["probs"][k] for k in ckpt["labels"]], abs=1e-5)
    # a rerun for something else (here the FAQ toggle) keeps the result on screen
    at.toggle(key="faq").set_value(True).run()
    assert any(r["label"] in m.value for m in at.markdown if "·" in m.value)
    at.text_area(key="cls_text").input("   ").run()
    at.button(key="cls_go").click().run()
    assert any("Escribe un texto" in w.value for w in at.warning)


def test_app_drops_a_system_prompt_the_model_cannot_read_and_refuses_nan_classifiers(chat_root, monkeypatch, tmp_path):
    """A system prompt typed for one model does not reach a model whose vocabulary has no <sys> (it used
    to raise in the page); a classifier whose weights turned NaN gives an error, not 'nan%'."""
    import shutil

    import torch
    for name in ("out-chat", "out-cls"):
        shutil.copytree(chat_root / name, tmp_path / name)
    ck = torch.load(chat_root / "out-chat" / "ckpt.pt", weights_only=True)
    assert ck["vocab"][5] == "<sys>"
    ck["vocab"][5] = "§"  # a vocabulary from before system prompts existed
    (tmp_path / "out-old").mkdir()
    torch.save(ck, tmp_path / "out-old" / "ckpt.pt")
    ck = torch.load(chat_root / "out-cls" / "ckpt.pt", weights_only=True)
    ck["model"]["head.weight"] = torch.full_like(ck["model"]["head.weight"], float("nan"))
    (tmp_path / "out-cls-nan").mkdir()
    torch.save(ck, tmp_path / "out-cls-nan" / "ckpt.pt")
    at = app_at(tmp_path, monkeypatch)
    at.text_area(key="system").input(SYS).run()
    at.selectbox(key="ckpt").set_value("out-old").run()
    m = ask(at, "¿Los perros son caninos?")
    assert m["source"] == "modelo" and m["system"] == "" and not m["raw"].startswith("<sys>")
    # back on a model with <sys>, the prompt typed earlier is still there and used (it was erased)
    at.selectbox(key="ckpt").set_value("out-chat").run()
    assert at.text_area(key="system").value == SYS
    assert ask(at, "¿Los gatos son felinos?")["system"] == SYS
    at.selectbox(key="cls_ckpt").set_value("out-cls-nan").run()
    at.text_area(key="cls_text").input("Muy bueno, lo recomiendo.").run()
    at.button(key="cls_go").click().run()
    assert not at.exception and any("No se pudo clasificar" in e.value for e in at.error)
    assert "cls_result" not in at.session_state


def test_app_classifies_without_an_instruction_model(chat_root, monkeypatch, tmp_path):
    """Only a classifier under the root: the page says no chat model was found, and still classifies."""
    import shutil
    from streamlit.testing.v1 import AppTest
    shutil.copytree(chat_root / "out-cls", tmp_path / "out-cls")
    monkeypatch.setenv("LLMFS_OUT_ROOT", str(tmp_path))
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=60).run()
    assert "No encontré" in at.warning[0].value and len(at.chat_input) == 0
    at.text_area(key="cls_text").input("El producto llegó roto y nadie responde.").run()
    at.button(key="cls_go").click().run()
    assert not at.exception and at.session_state["cls_result"]["checkpoint"] == "out-cls"
