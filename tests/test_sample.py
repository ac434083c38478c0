"""sample.py: free text from a pretrained model, answers from an instruction model, and how it
treats odd prompts and wrong checkpoints (one line, nothing on disk changed)."""
import os

import pytest
import torch

from checkpoint import save_checkpoint
from conftest import TINY, assert_one_line_error, digest, run, run_many
from model import GPT, GPTConfig
from tokenizer import BASE_CHARS, CharTokenizer


def test_sample_streams_text(tiny_run):
    (tiny_run / "start.txt").write_text("El gato", encoding="utf-8")
    p1, p2, p3 = run_many([("sample.py", "--out_dir=out", "--start=El perro", "--max_new_tokens=30", "--num_samples=2"),
                           ("sample.py", "--out_dir=out", "--start=FILE:start.txt", "--max_new_tokens=20", "--seed=1"),
                           ("sample.py", "--out_dir=out", "--start=FILE:start.txt", "--max_new_tokens=20", "--seed=1")],
                          cwd=tiny_run)
    assert p1.returncode == 0, p1.stderr
    assert p1.stdout.count("El perro") == 2 and p1.stdout.count("---------------") == 2
    assert p2.returncode == 0 and p2.stdout.startswith("El gato") and p2.stdout == p3.stdout  # deterministic


@pytest.fixture(scope="module")
def instr_dir(tmp_path_factory):
    """An (untrained) instruction checkpoint: enough to show how sample.py treats odd prompts."""
    d = tmp_path_factory.mktemp("instr")
    tok = CharTokenizer.from_texts([BASE_CHARS])
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(tok), block_size=64, n_layer=1, n_head=2, n_embd=16)
    save_checkpoint({"kind": "instr", "model_args": cfg, "model": GPT(GPTConfig(**cfg)).state_dict(),
                     "vocab": tok.vocab, "history": []}, str(d / "ckpt.pt"))
    return d


def test_odd_prompts_are_answered_and_bad_ones_refused(instr_dir):
    """Emoji, control characters, special-token text and long prompts get an answer, never a crash;
    an empty or over-long prompt is one line, and nothing on disk changes."""
    before = digest(instr_dir)
    odd = ["¿Los perros son 🐶?", "hola\x1b[31m rojo", "<resp><eos> <instr>", "ñ" * 300]
    p = run("sample.py", f"--out_dir={instr_dir}", "--max_new_tokens=10", "--show_raw=True", input="\n".join(odd) + "\n")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    raw = [line for line in p.stdout.splitlines() if line.startswith("[raw] <instr>")]
    assert len(raw) == len(odd) and "\x1b" not in p.stdout  # control characters are dropped, not echoed
    assert raw[2].startswith("[raw] <instr><resp><eos> <instr><resp>")  # typed specials are plain text
    bad = run_many([("sample.py", f"--out_dir={instr_dir}", "--prompt= "),
                    ("sample.py", f"--out_dir={instr_dir}", "--prompt=   \x07  "),
                    ("sample.py", f"--out_dir={instr_dir}", "--prompt=" + "x" * 501)])
    for p, fragment in zip(bad, ["empty prompt", "empty prompt", "longer than"]):
        assert fragment in assert_one_line_error(p)
    assert digest(instr_dir) == before


def test_a_bad_line_on_stdin_skips_that_question_only(instr_dir):
    """Questions piped in: one that cannot be asked (too long) gets an [error] line and the others are still
    answered, then one line on stderr and exit 1; --num_samples answers each question that many times; an
    over-long --system is refused in one line."""
    qs = ["¿Los perros son caninos?", "a" * 600, "¿Y los gatos?"]
    args = (f"--out_dir={instr_dir}", "--max_new_tokens=5", "--show_raw=True")
    p = run("sample.py", *args, input="\n".join(qs) + "\n")
    twice = run("sample.py", *args, "--num_samples=2", input="\n".join(qs[::2]) + "\n")
    system = run("sample.py", *args, "--system=" + "s" * 501, "--prompt=hola")
    raw = [line for line in p.stdout.splitlines() if line.startswith("[raw] <instr>")]
    assert [r[len("[raw] <instr>"):][:10] for r in raw] == ["¿Los perro", "¿Y los gat"]
    assert "[error] prompt of 600 characters is longer than max_prompt_chars=500" in p.stdout
    assert "1 of 3 questions could not be asked" in assert_one_line_error(p)
    assert len([line for line in twice.stdout.splitlines() if line.startswith("[raw] <instr>")]) == 4
    assert "--system of 501 characters is longer than max_prompt_chars=500" in assert_one_line_error(system)


def test_output_piped_into_a_reader_that_stops_ends_quietly(tiny_run):
    """`python sample.py | head -1`: the reader is gone before the script writes; the script ends with exit
    code 1 and no BrokenPipeError traceback (nor Python's 'Exception ignored' at exit)."""
    import subprocess
    import sys
    from conftest import ROOT
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "sample.py"), "--out_dir=out", "--max_new_tokens=50"],
                            cwd=tiny_run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader stops at once
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_compile_without_a_cpp_compiler_is_one_line(tiny_run, tmp_path):
    """--compile=True where torch.compile cannot build its C++ (the compiler named by CXX is missing):
    one line, said before any tracing, and exit 1, not torch's long traceback. The same for train.py,
    before anything is written."""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    p = run("sample.py", "--out_dir=out", "--compile=True", "--max_new_tokens=5", cwd=tiny_run, env=env)
    assert "--compile=True failed: torch.compile needs a C++ compiler" in assert_one_line_error(p)
    p = run("train.py", TINY, "--dataset=tiny", f"--out_dir={tmp_path / 'out-c'}", "--compile=True", "--device=cpu",
            cwd=tiny_run, env=env)
    assert "--compile=True: torch.compile needs a C++ compiler" in assert_one_line_error(p)
    assert not (tmp_path / "out-c").exists()


def test_missing_corrupt_and_wrong_kind_checkpoints(instr_dir, tiny_run, tmp_path):
    for name in ("trunc", "garbage", "cls"):
        (tmp_path / name).mkdir()
    good = (tiny_run / "out" / "ckpt.pt").read_bytes()
    (tmp_path / "trunc" / "ckpt.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage" / "ckpt.pt").write_bytes(b"\x80\x04 definitely not a checkpoint")
    ck = torch.load(instr_dir / "ckpt.pt", weights_only=True)
    ck["kind"] = "cls"
    torch.save(ck, tmp_path / "cls" / "ckpt.pt")
    ck = torch.load(instr_dir / "ckpt.pt", weights_only=True)  # a diverged run saved by hand: NaN weights
    ck["model"]["h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    (tmp_path / "nan").mkdir()
    torch.save(ck, tmp_path / "nan" / "ckpt.pt")
    cases = [(("sample.py", "--out_dir=nowhere"), "no checkpoint"),
             (("sample.py", "--out_dir=trunc"), "corrupt"),
             (("sample.py", "--out_dir=garbage"), "corrupt"),
             (("sample.py", "--out_dir=cls", "--prompt=hola"), "'cls'"),
             (("sample.py", "--out_dir=nan", "--prompt=hola"), "weights hold NaN or inf values (h.0.mlp.c_fc.weight)"),
             (("sample.py", f"--out_dir={tiny_run / 'out'}", "--prompt=hola"), "--start"),
             (("finetune_instr.py", "--eval_only=True", f"--out_dir={tiny_run / 'out'}"), "'pretrain'")]
    for p, (args, fragment) in zip(run_many([c for c, _ in cases], cwd=tmp_path), cases):
        assert fragment in assert_one_line_error(p), args
