"""The chat app (app.py): the UI through Streamlit's AppTest, the FAQ matcher, the CLI.

    .venv/bin/python -m pytest tests/test_app.py -q
The browser test is tests/test_browser.py, the container checks tests/test_docker.py."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import (ROOT, build_broken_checkpoint, build_constant_checkpoint,
                         instruction_rows)

import app  # noqa: E402  (conftest put the repository root on sys.path)

APP = os.path.join(ROOT, "app.py")
SPEC_NEAR_MISSES = ["¿Los perros pueden comer chocolate?", "¿Cuál es la capital de Panamá?",
                    "¿Cuántos años vive un gato?", "¿Cuántos habitantes tiene San José?"]


@pytest.fixture
def at(out_root, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("LLMFS_OUT_ROOT", out_root)
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    t = AppTest.from_file(APP, default_timeout=60).run()
    assert not t.exception, [e.value for e in t.exception]
    return t


def test_a_bad_llmfs_device_is_named_as_the_setting_at_fault(out_root, monkeypatch):
    """LLMFS_DEVICE=gpu (or cuda on a machine without one): the error names the variable, not a --device
    flag the app does not have, and the 'train one first' steps stay away: the checkpoint is fine."""
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("LLMFS_OUT_ROOT", out_root)
    monkeypatch.setenv("LLMFS_DEVICE", "gpu")
    t = AppTest.from_file(APP, default_timeout=60).run()
    assert not t.exception, [e.value for e in t.exception]
    errors = [e.value for e in t.error]
    assert len(errors) == 1 and "LLMFS_DEVICE='gpu': unknown device 'gpu'" in errors[0] and "--device" not in errors[0]
    assert not any("Entrena uno" in m.value for m in t.markdown)


def test_an_unloadable_checkpoint_points_to_the_others_and_top_k_keeps_its_range(out_root, tmp_path, monkeypatch):
    """The first model in the list does not load (weights that do not fit its model_args): the page
    says so and points to the sidebar, not to "train one first"; the other model then answers. The
    top-k slider's range does not follow the vocabulary (a changing range resets the slider)."""
    from streamlit.testing.v1 import AppTest

    from checkpoint import load_checkpoint, save_checkpoint
    good = load_checkpoint(os.path.join(out_root, "out-instr"))
    for name, ck in (("out-a-broken", {**good, "model_args": {**good["model_args"], "n_layer": 5}}), ("out-b", good)):
        os.makedirs(tmp_path / name)
        save_checkpoint(ck, str(tmp_path / name / "ckpt.pt"))
    monkeypatch.setenv("LLMFS_OUT_ROOT", str(tmp_path))
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    t = AppTest.from_file(APP, default_timeout=60).run()
    assert not t.exception and "No se pudo cargar `out-a-broken`" in t.error[0].value
    assert "Elige otro modelo" in t.info[0].value and not any("Entrena uno" in m.value for m in t.markdown)
    t.sidebar.selectbox(key="ckpt").set_value("out-b").run()
    assert not t.exception and t.chat_input and t.sidebar.slider(key="top_k").max == 200
    # the chosen model's folder deleted while the app runs: the switch to another one is said, not silent
    os.makedirs(tmp_path / "out-c")
    save_checkpoint(good, str(tmp_path / "out-c" / "ckpt.pt"))
    t.run()  # the list now offers it
    t.sidebar.selectbox(key="ckpt").set_value("out-c").run()
    import shutil
    shutil.rmtree(tmp_path / "out-c")
    t.run()
    assert not t.exception and any("`out-c` ya no está en disco" in w.value for w in t.warning), [w.value for w in t.warning]


def ask(at, text):
    at.chat_input[0].set_value(text).run()
    assert not at.exception, [e.value for e in at.exception]
    return at.session_state["messages"][-1]


def captions(at):
    return [c.value for c in at.main.caption]


# ---------------------------------------------------------------------------------------
# the UI


def test_chat_answers_with_source_and_metrics(at):
    m = ask(at, "¿Los perros son caninos?")
    assert m["source"] == "FAQ" and m["content"] == app.FAQ["fact:perro"]
    m = ask(at, "¿Los perros pueden comer chocolate?")  # a near miss: the model answers
    assert m["source"] == "modelo" and m["tokens"] >= 1 and m["latency"] > 0 and m["tps"] > 0
    msgs = at.chat_message
    assert len(msgs) == 4 and [c.name for c in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1].markdown[0].value == app.escape_md(app.FAQ["fact:perro"])
    assert msgs[3].markdown[0].value == app.escape_md(m["content"])
    assert any("FAQ" in c.value for c in msgs[1].caption)
    meta = " ".join(c.value for c in msgs[3].caption)
    assert "modelo" in meta and "tokens/s" in meta and f"{m['tokens']} tokens" in meta
    # the model path counts what it generated: the characters shown, plus <eos> if it stopped
    assert m["tokens"] == len(m["content"]) + m["stopped"] or m["content"] == "(respuesta vacía)"


def test_presets(at):
    for i, q in enumerate(["¿A qué familia pertenece el perro?", "¿Qué tipo de animal es el gato?",
                           "¿Cuál es la capital de Costa Rica?"]):
        at.button(key=f"preset_{i}").click().run()
        assert not at.exception
        user, bot = at.session_state["messages"][-2:]
        assert user["content"] == q and bot["source"] == "FAQ"
    assert [m["content"] for m in at.session_state["messages"][1::2]] == list(app.FAQ.values())


def test_faq_toggle_changes_source(at):
    q = "¿Cuál es la capital de Costa Rica?"
    assert ask(at, q)["source"] == "FAQ"
    at.toggle(key="faq").set_value(False).run()
    m = ask(at, q)
    assert m["source"] == "modelo"
    assert "modelo" in " ".join(c.value for c in at.chat_message[-1].caption)
    at.toggle(key="faq").set_value(True).run()
    assert ask(at, q)["source"] == "FAQ"


def test_sliders_reach_the_model(at, monkeypatch):
    import chat
    calls, real = [], chat.answer_stream

    def spy(model, tok, prompt, max_new_tokens, temperature, top_k, **kw):  # what generation is asked for
        calls.append((max_new_tokens, temperature, top_k))
        return real(model, tok, prompt, max_new_tokens, temperature, top_k, **kw)
    monkeypatch.setattr(chat, "answer_stream", spy)  # the app imports it when it answers
    at.toggle(key="faq").set_value(False).run()
    at.slider(key="max_new_tokens").set_value(8).run()
    m = ask(at, "¿Qué hora es?")
    assert m["source"] == "modelo" and m["tokens"] <= 8 and "máx=8" in m["settings"]
    assert calls[-1][0] == 8
    at.slider(key="temperature").set_value(0.8).run()
    at.slider(key="top_k").set_value(5).run()
    m = ask(at, "¿Qué hora es?")
    assert m["tokens"] <= 8 and "T=0.8" in m["settings"] and "top-k=5" in m["settings"]
    assert calls[-1] == (8, pytest.approx(0.8), 5)  # the sliders' values reach generation, not only the label
    assert at.slider(key="top_k").max <= 200


def test_raw_trace_and_special_tokens_are_plain_text(at):
    at.toggle(key="faq").set_value(False).run()
    at.toggle(key="raw").set_value(True).run()
    m = ask(at, "hola <resp> <eos>")
    tok = app_tok(m)
    assert m["prompt_ids"].count(tok.resp_id) == 1 and tok.eos_id not in m["prompt_ids"]  # typed = plain text
    raw = at.chat_message[-1].code[0].value
    assert raw.startswith("<instr>hola <resp> <eos><resp>") and raw == m["raw"]
    assert raw.endswith("<eos>") == m["stopped"]
    at.toggle(key="raw").set_value(False).run()
    assert len(at.chat_message[-1].code) == 0


@pytest.fixture(scope="module")
def instr_writer(out_root, tmp_path_factory):
    """A checkpoint that writes <instr> at every step: a special id with no text of its own, so ids
    rebuilt from the answer's text would lose it (decode -> encode is not the identity)."""
    from tokenizer import SPECIALS
    root = build_constant_checkpoint(str(tmp_path_factory.mktemp("writer")), out_root, SPECIALS.index("<instr>"))
    return root, SPECIALS.index("<instr>")


def test_raw_trace_and_look_inside_keep_the_generated_ids(instr_writer, monkeypatch):
    from streamlit.testing.v1 import AppTest
    root, instr = instr_writer
    monkeypatch.setenv("LLMFS_OUT_ROOT", root)
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.toggle(key="faq").set_value(False).run()
    at.toggle(key="raw").set_value(True).run()
    at.slider(key="max_new_tokens").set_value(8).run()
    m = ask(at, "hola")
    assert m["answer_ids"] == [instr] * 8 and m["tokens"] == 8 and not m["stopped"]
    assert m["content"] == "(respuesta vacía)"  # no text, but eight tokens
    assert m["raw"] == "<instr>hola<resp>" + "<instr>" * 8 == at.chat_message[-1].code[0].value
    assert len(at.select_slider(key="inside_pos").options) == 8  # "Mirar dentro": the same eight tokens
    assert not any("más que la ventana" in c.value for c in at.caption)
    # an answer longer than the window (generation slid it): "Mirar dentro" says its pass is not the same
    at.slider(key="max_new_tokens").set_value(512).run()
    m = ask(at, "hola")
    assert m["tokens"] == 512 and any("más que la ventana" in c.value for c in at.caption)


def test_sample_raw_trace_keeps_the_generated_ids(instr_writer, monkeypatch, capsys):
    import runpy

    from checkpoint import load_checkpoint, model_from_checkpoint
    from chat import answer_ids, answer_stream
    root, instr = instr_writer
    model, tok = model_from_checkpoint(load_checkpoint(os.path.join(root, "out-instr")))
    assert list(answer_ids(model, tok, "hola", 5)) == [instr] * 5  # the ids, and no text for them
    assert "".join(text for _, text in answer_stream(model, tok, "hola", 5)) == ""
    monkeypatch.setattr(sys, "argv", ["sample.py", f"--out_dir={os.path.join(root, 'out-instr')}", "--prompt=hola",
                                      "--max_new_tokens=5", "--show_raw=True", "--device=cpu"])
    runpy.run_path(os.path.join(ROOT, "sample.py"), run_name="__main__")  # in-process: torch is loaded already
    assert capsys.readouterr().out.splitlines()[-1] == "[raw] <instr>hola<resp>" + "<instr>" * 5


def app_tok(m):
    from checkpoint import load_checkpoint, model_from_checkpoint
    return model_from_checkpoint(load_checkpoint(m["path"]))[1]


def test_input_cap(at):
    # what the model reads is counted after clean_text: NFC can lengthen text (U+0958 -> 2 code points)
    m = ask(at, "\u0958" * 300)
    assert m["source"] == "aviso" and "600" in m["content"] and "500" in m["content"]
    assert len(at.session_state["messages"]) == 1 and at.chat_message[0].warning  # no question, no model
    # the browser stops typing at max_chars, and Streamlit keeps the first max_chars of what a client sends
    assert at.chat_input[0].proto.max_chars == app.MAX_PROMPT_CHARS
    m = ask(at, "¿" + "a" * 500 + "?")
    assert at.session_state["messages"][-2]["content"] == "¿" + "a" * 499 and m["source"] in ("FAQ", "modelo")


def test_look_inside(at):
    at.toggle(key="faq").set_value(False).run()
    m = ask(at, "¿Los gatos son felinos?")
    assert m["source"] == "modelo"
    exp = at.chat_message[-1].expander
    assert len(exp) == 1 and "Mirar dentro" in exp[0].label
    assert [t.label for t in exp[0].tabs] == ["Atención", "Siguiente token", "Curva de pérdida"]
    assert len(exp[0].get("vega_lite_chart")) == 3  # heatmap, next-token bars, loss curve
    # every layer and every head choice (the first render was layer 1, the mean of the heads); one run
    # per change of several widgets: each run draws the whole chat again
    for layer, head in ((0, "media"), (1, 0), (0, 1)):
        at.selectbox(key="inside_layer").set_value(layer)
        at.selectbox(key="inside_head").set_value(head).run()
        assert not at.exception
    last = min(len(m["prompt_ids"]) + len(m["answer_ids"]), 128) - 1  # the last generated position
    at.selectbox(key="inside_rows").set_value("todo")
    at.select_slider(key="inside_pos").set_value(last)
    at.slider(key="inside_k").set_value(3).run()
    assert not at.exception
    # only the last model answer has the expander; a FAQ answer after it does not move it
    at.toggle(key="faq").set_value(True).run()
    ask(at, "¿Los gatos son felinos?")
    assert len(at.chat_message[-1].expander) == 0 and len(at.chat_message[-3].expander) == 1


def test_inspect_sequence_is_causal_attention(out_root):
    from checkpoint import load_checkpoint, model_from_checkpoint
    model, tok = model_from_checkpoint(load_checkpoint(os.path.join(out_root, "out-instr")))
    ids, _ = tok.encode_instruction("¿Los perros son caninos?", "Sí.")
    att, probs = app.inspect_sequence(model, ids)
    L, H, T = model.config.n_layer, model.config.n_head, len(ids)
    assert att.shape == (L, H, T, T) and probs.shape == (T, len(tok))
    assert abs(att.sum(-1) - 1).max() < 1e-5 and abs(probs.sum(-1) - 1).max() < 1e-5
    assert att[:, :, 0, 1:].max() == 0  # the first position sees only itself
    assert all(b.attn.att is None for b in model.h)  # nothing kept after the pass
    rows, start = app.loss_history_frame({"history": [{"iter": 0, "loss": 3.0}, {"iter": 10, "val_loss": 2.0}],
                                          "pretrain_history": [{"iter": 0, "train_loss": 4.0},
                                                               {"iter": 100, "val_loss": float("nan")}]})
    assert start == 100 and {r["paso"] for r in rows} == {0, 100, 110} and len(rows) == 3


def test_new_conversation_and_checkpoint_choice(at):
    ask(at, "¿Los perros son caninos?")
    sel = at.selectbox(key="ckpt")
    assert sel.options == ["out-instr", "out-instr-b"] and sel.value == "out-instr"  # out-pre is not instr
    assert any("out-pre" in c.value for c in at.sidebar.caption)
    sel.set_value("out-instr-b").run()
    at.toggle(key="faq").set_value(False).run()
    m = ask(at, "¿Los perros son caninos?")
    assert m["ckpt"] == "out-instr-b" and len(at.session_state["messages"]) == 4
    at.button(key="new_chat").click().run()
    assert at.session_state["messages"] == [] and len(at.chat_message) == 0


def test_no_checkpoint_page(tmp_path, monkeypatch, out_root):
    from streamlit.testing.v1 import AppTest
    os.makedirs(tmp_path / "out-pre")
    import shutil
    shutil.copy(os.path.join(out_root, "out-pre", "ckpt.pt"), tmp_path / "out-pre" / "ckpt.pt")
    (tmp_path / "out-junk").mkdir()
    (tmp_path / "out-junk" / "ckpt.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("LLMFS_OUT_ROOT", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and len(at.chat_input) == 0
    code = at.code[0].value
    for cmd in app.TRAIN_COMMANDS:
        assert cmd in code
    assert "python prepare.py" in code and "config/finetune_instr.py" in code
    assert "No encontré" in at.warning[0].value
    text = " ".join(c.value for c in at.caption)
    assert "out-pre" in text and "out-junk" in text


def test_unloadable_checkpoint_page(tmp_path, monkeypatch, out_root):
    import torch
    from streamlit.testing.v1 import AppTest
    ck = torch.load(os.path.join(out_root, "out-instr", "ckpt.pt"), weights_only=True)
    ck["vocab"] = ck["vocab"][:-1]  # one character short: the embedding table does not match
    (tmp_path / "out-instr").mkdir()
    torch.save(ck, tmp_path / "out-instr" / "ckpt.pt")
    monkeypatch.setenv("LLMFS_OUT_ROOT", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and len(at.chat_input) == 0
    assert "No se pudo cargar el modelo" in at.error[0].value and "vocabulary" in at.error[0].value
    assert "python prepare.py" in at.code[0].value


def test_generation_error_is_a_chat_message(tmp_path, monkeypatch, out_root):
    """An error while generating is a message in the chat, and the FAQ still answers; NaN weights (a
    diverged run) are refused when the model loads, in one message."""
    from streamlit.testing.v1 import AppTest

    import model

    def failing(*args, **kwargs):
        raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        yield  # a generator, like the real one
    monkeypatch.setattr(model.GPT, "generate_stream", failing)
    monkeypatch.setenv("LLMFS_OUT_ROOT", out_root)
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.toggle(key="faq").set_value(False).run()
    m = ask(at, "¿Los perros son caninos?")
    assert m["source"] == "error" and "No se pudo generar" in m["content"]
    assert at.chat_message[-1].error and not at.exception
    at.toggle(key="faq").set_value(True).run()  # the FAQ still answers
    assert ask(at, "¿Los perros son caninos?")["source"] == "FAQ"
    monkeypatch.undo()
    monkeypatch.setenv("LLMFS_OUT_ROOT", build_broken_checkpoint(str(tmp_path / "broken"), out_root))
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and "weights hold NaN or inf values" in at.error[0].value


# ---------------------------------------------------------------------------------------
# the FAQ matcher


def test_normalize():
    assert app.normalize("¿Cuál es la CAPITAL de Costa Rica?!") == "cual es la capital de costa rica"
    assert app.normalize("  Año   niño, pingüino… ÁÉÍÓÚ ") == "año niño pinguino aeiou"
    assert app.normalize("perros=caninos") == "perros = caninos"


def _recall(split):
    out = {}
    for kind in app.FAQ:
        rows = [r for r in instruction_rows(split) if r["kind"] == kind]
        out[kind] = sum(app.match_faq(r["prompt"]) == kind for r in rows) / len(rows)
    return out


def test_faq_recall_on_held_out_prompts():
    # measured on test.jsonl (never used to design the rules' first version): capital 91.4 %,
    # gato 97.1 %, perro 94.3 % — see readme; the thresholds leave a little room
    recall = _recall("test")
    assert all(r >= 0.9 for r in recall.values()), recall
    assert sum(recall.values()) / 3 >= 0.93, recall


def test_faq_recall_on_train_prompts():
    recall = _recall("train")
    # the rules were written from the first 110 prompts per fact; the ~1,300 added later (slang,
    # dog breeds, "el mejor amigo del hombre" ...) are new to them: measured 88.6-93.5 %
    assert all(r >= 0.85 for r in recall.values()), recall


@pytest.mark.parametrize("split", ["test", "test2", "train"])
def test_faq_never_matches_an_abstain_prompt(split):
    false = [(r["prompt"], app.match_faq(r["prompt"])) for r in instruction_rows(split)
             if r["kind"] == "abstain" and app.match_faq(r["prompt"])]
    assert false == []


def test_faq_never_answers_another_fact():
    wrong = [(r["prompt"], r["kind"], app.match_faq(r["prompt"]))
             for split in ("test", "test2", "train") for r in instruction_rows(split)
             if r["kind"] in app.FAQ and app.match_faq(r["prompt"]) not in (None, r["kind"])]
    assert wrong == []


@pytest.mark.parametrize("q", SPEC_NEAR_MISSES + [
    "¿Qué tipo de pelo tiene el gato?", "¿Los perros odian a los felinos?", "¿Qué es un perro guía?",
    "¿Cuál es la capital de la provincia de Alajuela en Costa Rica?", "¿Quién fue el capitán de Costa Rica?",
    "¿El perro sabe el camino a casa?", "¿Los dientes caninos del perro se caen?",
    "¿Cuántos habitantes tiene la capital de Costa Rica?", "¿Qué tiempo hace en la capital de Costa Rica?",
    "¿Cómo presento mi perro a mi familia?", "¿Perros y gatos son de la misma familia?",
    "¿El zorro es un cánido como el perro?", "¿A qué raza pertenece el perro de Tintín?",
    "¿Cuál fue la primera capital de Costa Rica?", "¿Qué es un gato hidráulico?",
    "¿Costa Rica tiene capital cultural?", "¿Qué familia de palabras tiene perro?",
    "¿Cómo se llama el gato de Shrek?", "¿Cómo se llama la capital de Panamá?",
    "¿Puerto Rico es un país?", "¿Cuál es la capital de Costa de Marfil?", "", "???",
    # the similarity fallback must not bring back what a rule ruled out
    "¿Cuál es la capital de Heredia, Costa Rica?", "cual es la capital de heredia costa rica",
    "¿Cuál es la capital del café en Costa Rica?", "¿Cuál era la capital de Costa Rica en 1820?",
    "¿El perro pertenece al dueño o al estado?", "¿Cómo se clasifica un gato hidráulico?",
    "¿Los perros calientes son caninos?",
    # other questions about the capital's place or the animal (found by an audit of the app)
    "¿Qué altitud tiene la capital de Costa Rica?", "¿Qué río pasa por la capital de Costa Rica?",
    "¿Qué aeropuerto sirve a la capital de Costa Rica?", "¿Qué familia de virus afecta a los perros?",
    "¿A qué familia pertenecen las pulgas del perro?", "¿Qué tipo de animal caza el gato?",
    "¿El perro de las praderas es un canino?"])
def test_faq_rejects_near_misses(q):
    assert app.match_faq(q) is None, app.match_faq_explain(q)


@pytest.mark.parametrize("q,kind", [
    ("¿El perro es un cánido?", "fact:perro"), ("perro canino?", "fact:perro"),
    ("¿De qué familia son los perros?", "fact:perro"), ("¿Cómo se llama la familia del perro?", "fact:perro"),
    ("¿Los gatitos son cánidos?", "fact:gato"), ("que animal es un gato", "fact:gato"),
    ("¿los gatos son de la familia felidae?", "fact:gato"), ("¿Qué capital tiene Costa Rica?", "fact:capital"),
    ("Dime la capital de costa rika porfa", "fact:capital"), ("CAPITAL DE COSTA RICA!!!", "fact:capital"),
    ("No me acuerdo, ¿cuál era la capital de Costa Rica?", "fact:capital"),  # "era": what one forgot
    ("¿Qué tipo de bicho es el perro?", "fact:perro"),  # "bicho" is a word, not a typo of "micho"
    ("k tipo d animal es el perro", "fact:perro")])  # the last one: only the difflib similarity rule
def test_faq_matches_paraphrases(q, kind):
    assert app.match_faq(q) == kind, app.match_faq_explain(q)


def test_faq_answers_are_the_dataset_responses():
    responses = {r["kind"]: r["response"] for r in instruction_rows("train")}
    assert app.FAQ == {k: responses[k] for k in app.FAQ}


# ---------------------------------------------------------------------------------------
# importable without a UI, and the CLI


def test_import_and_cli_start_no_ui():
    code = "import app, sys; print(app.match_faq('¿Los perros son caninos?')); print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["fact:perro", "False"], out.stderr
    out = subprocess.run([sys.executable, "app.py", "--faq-eval", "data/es/instructions/test.jsonl",
                          "data/es/instructions/test2.jsonl"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)  # train.jsonl is measured in-process above
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"fact:capital\s+recall \d+/35", out.stdout) and "abstain       false matches 0/60" in out.stdout
    assert "false matches 0/52" in out.stdout
    out = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "streamlit run app.py" in out.stdout


def test_faq_eval_reads_conversation_files_as_the_app_answers(tmp_path):
    """group/kind labels are judged by the kind (a matched fact is a hit, not a false match); a line with a
    system prompt is left out, as the app never answers it from the FAQ."""
    import app
    rows = [{"prompt": "¿Los gatos son felinos?", "kind": "context/fact:gato", "history": [["¿Hola?", "Hola."]]},
            {"prompt": "¿Los perros son caninos?", "kind": "system/yesno", "system": "Responde solo sí o no."},
            {"prompt": "¿Qué hora es?", "kind": "followup/abstain"}]
    (tmp_path / "conv.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    stats, misses, false = app.faq_eval(str(tmp_path / "conv.jsonl"))
    assert stats["context/fact:gato"]["hit"] == 1 and not misses and not false
    assert stats["with system prompt"]["n"] == 1 and "system/yesno" not in stats
    out = subprocess.run([sys.executable, "app.py", "--faq-eval", str(tmp_path / "conv.jsonl")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "context/fact:gato recall 1/1" in out.stdout, out.stdout + out.stderr
    assert "with system prompt: 1 left out" in out.stdout


def test_faq_eval_cli_names_a_bad_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "hola", "kind": "abstain"}\n[1, 2]\n', encoding="utf-8")
    (tmp_path / "num.jsonl").write_text('{"prompt": 5, "kind": "abstain"}\n', encoding="utf-8")
    for name, line in (("bad.jsonl", 2), ("num.jsonl", 1)):
        out = subprocess.run([sys.executable, "app.py", "--faq-eval", str(tmp_path / name)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [
            f"error: cannot read {tmp_path / name}: line {line}: expected an object with string 'prompt' and 'kind' fields"]


def test_streamlit_run_is_local_by_default():
    import tomllib
    with open(os.path.join(ROOT, ".streamlit", "config.toml"), "rb") as f:
        assert tomllib.load(f)["server"]["address"] == "127.0.0.1"  # the container overrides it (test_docker.py)


def test_find_checkpoints(out_root, tmp_path):
    found, skipped = app.find_checkpoints(out_root)
    assert [n for n, _ in found] == ["out-instr", "out-instr-b"] and [n for n, _ in skipped] == ["out-pre"]
    assert app.find_checkpoints(str(tmp_path)) == ([], [])
    assert json.dumps(app.escape_md("<resp> *x* :red[y]")) == json.dumps(
        "\\<resp\\> \\*x\\* \\:red\\[y\\]")
    # entities and setext headings stay text: "&lt;b&gt;" is not shown as <b>, "===" makes no heading
    assert app.escape_md("&lt;b&gt;\n===") == "\\&lt;b\\&gt;  \n\\=\\=\\="
