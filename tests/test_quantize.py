"""quantize.py: int8 per output channel and int4 per group, the error bound, int4 packing, quantized
checkpoints loaded by every script (greedy answers unchanged for int8), and the bad inputs."""
import os
import shutil

import pytest
import torch

from conftest import PRESETS, ROOT, assert_one_line_error, digest, run, run_many, trained_instr
from quantize import dequantize, pack_int4, quantize, unpack_int4


@pytest.mark.parametrize("bits, group", [(8, None), (4, 32), (4, 8)])
def test_dequantize_error_is_at_most_half_a_step(bits, group):
    torch.manual_seed(0)
    w = torch.randn(24, 64) * torch.logspace(-3, 1, 24)[:, None]  # rows of very different sizes
    w[3] = 0.0  # an all-zero row must not divide by zero
    q, scale = quantize(w, bits, group or 32)
    assert scale.dtype == torch.float16
    if bits == 8:
        assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (24, 1) and q.abs().max() <= 127
    else:
        assert q.dtype == torch.uint8 and q.shape == (24, 32) and scale.shape == (24, 64 // group)
    step = scale.float().repeat_interleave(64 // scale.size(1), dim=1)  # each element's own scale
    err = (dequantize(q, scale, bits) - w).abs()
    assert (err <= step / 2 * (1 + 1e-3)).all()
    assert (dequantize(q, scale, bits)[3] == 0).all()
    # each group's scale comes from its largest weight, which lands on the top level (+-127 for int8, +-7 for
    # int4): nothing is clipped and the whole range is used (the all-zero row excepted)
    levels, qmax, g = (q, 127, 64) if bits == 8 else (unpack_int4(q), 7, group)
    top = levels.abs().reshape(24, 64 // g, g).amax(dim=-1)  # (24, groups)
    used = w.abs().reshape(24, 64 // g, g).amax(dim=-1) > 1e-4
    assert (top[used] == qmax).all() and used.sum() == 23 * (64 // g)


def test_int4_pack_unpack_round_trip():
    q = torch.randint(-8, 8, (5, 64), dtype=torch.int8)
    p = pack_int4(q)
    assert p.dtype == torch.uint8 and p.shape == (5, 32)
    assert torch.equal(unpack_int4(p), q)
    assert pack_int4(torch.tensor([[-8, 7]], dtype=torch.int8)).item() == 0x0 | (0xF << 4)  # low nibble first


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """root/out-instr (trained_instr), root/out-instr-int8 and root/q4 (int4, groups of 16), made by the CLI."""
    root = tmp_path_factory.mktemp("quant")
    src = trained_instr(root / "out-instr")
    p8, p4 = run_many([("quantize.py", f"--out_dir={src}", "--bits=8"),
                       ("quantize.py", f"--out_dir={src}", "--bits=4", "--group_size=16", f"--dst={root / 'q4'}")])
    assert p8.returncode == 0 and p4.returncode == 0, p8.stderr + p4.stderr
    assert "int8, per output channel" in p8.stdout and "groups of 16" in p4.stdout
    return root


def test_quantized_checkpoints_load_everywhere_and_int8_answers_like_float(quantized, tmp_path):
    from checkpoint import load_checkpoint, model_from_checkpoint
    from chat import answer_ids
    src = str(quantized / "out-instr")
    raw = torch.load(quantized / "out-instr-int8" / "ckpt.pt", weights_only=True)  # plain tensors and types only
    assert raw["quant"]["bits"] == 8 and raw["model"]["h.0.attn.c_attn.weight_q"].dtype == torch.int8
    assert "wte.weight" not in raw["model"] and "lm_head.weight" not in raw["model"]  # tied: stored once
    assert torch.load(quantized / "q4" / "ckpt.pt", weights_only=True)["quant"] == {
        "bits": 4, "group_size": 16, "source": src}
    fp, tok = model_from_checkpoint(load_checkpoint(src))
    q8, _ = model_from_checkpoint(load_checkpoint(str(quantized / "out-instr-int8")))
    q4, _ = model_from_checkpoint(load_checkpoint(str(quantized / "q4")))
    assert q8.num_params() == fp.num_params() == q4.num_params()
    for q, a in PRESETS.items():
        answer = list(answer_ids(fp, tok, q, 60))
        assert tok.decode(answer) == a  # the float model knows its answers
        assert list(answer_ids(q8, tok, q, 60)) == answer, q  # and int8 gives the very same tokens
    x = torch.tensor([tok.encode("¿Los perros son caninos?")])
    with torch.no_grad():
        ref = fp(x)[0]
        assert (q8(x)[0] - ref).abs().max() < 0.05 * ref.abs().max()
        assert (q4(x)[0] - ref).abs().max() < 0.25 * ref.abs().max()
    # the CLI of an inference script, and the refusal of a training script
    sample, finetune, export = run_many([
        ("sample.py", f"--out_dir={quantized / 'q4'}", "--prompt=¿Los gatos son felinos?", "--max_new_tokens=20", "--device=cpu"),
        ("finetune_instr.py", f"--init_from={quantized / 'out-instr-int8'}", f"--out_dir={tmp_path / 'ft'}", "--max_iters=2",
         "--device=cpu"),
        ("checkpoint.py", f"--src={quantized / 'q4'}", f"--dst={tmp_path / 'export'}")])  # bf16 of int4 scales: lossy
    assert sample.returncode == 0 and sample.stdout.strip(), sample.stderr
    assert "is quantized (int8): it is for inference only" in assert_one_line_error(finetune)
    assert "is quantized (int4)" in assert_one_line_error(export)
    assert not os.path.exists(tmp_path / "ft") and not os.path.exists(tmp_path / "export")



def test_app_answers_with_a_quantized_checkpoint_and_says_so(quantized, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("LLMFS_OUT_ROOT", str(quantized))
    monkeypatch.setenv("LLMFS_DEVICE", "cpu")
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=60).run()
    at.selectbox(key="ckpt").set_value("out-instr-int8").run()
    at.toggle(key="faq").set_value(False).run()
    at.chat_input[0].set_value("¿Cuál es la capital de Costa Rica?").run()
    assert not at.exception, [e.value for e in at.exception]
    size = os.path.getsize(quantized / "out-instr-int8" / "ckpt.pt") / 1e6
    assert any(f"cuantizado int8, {size:.2f} MB" in c.value for c in at.sidebar.caption)
    assert at.session_state["messages"][-1]["content"] == PRESETS["¿Cuál es la capital de Costa Rica?"]


def test_quantize_bad_inputs_are_one_line_and_write_nothing(quantized, out_root, tmp_path):
    # a trained (float) model at --dst is not replaced without --overwrite=True
    (tmp_path / "float").mkdir()
    shutil.copy(os.path.join(out_root, "out-instr", "ckpt.pt"), tmp_path / "float" / "ckpt.pt")
    before = digest(quantized), digest(tmp_path)
    bits, again, group, missing, taken = run_many([
        ("quantize.py", f"--out_dir={os.path.join(out_root, 'out-instr')}", "--bits=3", f"--dst={tmp_path / 'x'}"),
        ("quantize.py", f"--out_dir={quantized / 'out-instr-int8'}", "--bits=4", f"--dst={tmp_path / 'y'}"),
        ("quantize.py", f"--out_dir={os.path.join(out_root, 'out-instr')}", "--bits=4", "--group_size=12",
         f"--dst={tmp_path / 'z'}"),
        ("quantize.py", f"--out_dir={tmp_path / 'nothing'}", "--bits=8"),
        ("quantize.py", f"--out_dir={os.path.join(out_root, 'out-instr')}", f"--dst={tmp_path / 'float'}"),
    ])
    assert "is not a quantized model" in assert_one_line_error(taken)
    assert "--bits=3 is not supported" in assert_one_line_error(bits)
    assert "already quantized" in assert_one_line_error(again)
    assert "--group_size=12" in assert_one_line_error(group)
    assert "no checkpoint" in assert_one_line_error(missing)
    assert (digest(quantized), digest(tmp_path)) == before


def test_size_ratio_is_against_the_float_weights(tiny_run, tmp_path):
    """A train.py checkpoint also holds the optimizer's state: the printed ratio compares the quantized file
    with the float weights alone (a tied output layer counted once), not with that bigger file."""
    import re
    p = run("quantize.py", "--out_dir=out", "--bits=8", f"--dst={tmp_path / 'q8'}", cwd=tiny_run)
    assert p.returncode == 0, p.stderr
    m = re.search(r"\(([\d.]+) MB, of which the weights ([\d.]+) MB\) -> .*\(([\d.]+) MB, ([\d.]+)x the float weights\)",
                  p.stdout)
    assert m, p.stdout
    whole, weights, small, ratio = map(float, m.groups())
    assert weights < whole / 2  # Adam's two moments per weight are in the file, not in the weights
    assert abs(ratio - small / weights) < 0.02 and 0.2 < ratio < 0.6
