"""configurator.py: config files and --key=value flags, parsed safely, with one-line errors."""
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import configurator
from configurator import configure


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



def test_config_file_values_of_other_types_are_converted_or_refused(tmp_path, capsys):
    """A Path becomes its string and a numpy number a Python one (they used to be dropped silently, so
    out_dir quietly stayed 'out'); any other object, or a config that calls sys.exit, is one line."""
    (tmp_path / "p.py").write_text('from pathlib import Path\nimport numpy as np\nout_dir = Path("runs") / "a"\n'
                                   'batch_size = np.int64(20)\nlearning_rate = np.float32(0.5)\n')
    g = _cfg()
    configure(g, [str(tmp_path / "p.py")])
    assert g["out_dir"] == os.path.join("runs", "a") and g["batch_size"] == 20 and type(g["batch_size"]) is int
    assert g["learning_rate"] == 0.5 and type(g["learning_rate"]) is float
    for name, text, fragment in (("s.py", "out_dir = {1, 2}\n", "sets out_dir to a set"),
                                 ("x.py", "import sys\nsys.exit(0)\n", "SystemExit")):
        (tmp_path / name).write_text(text)
        with pytest.raises(SystemExit) as e:
            configure(_cfg(), [str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and fragment in err and len(err.splitlines()) == 1


def test_configurator_records_which_keys_were_given(tmp_path):
    """train.py's resume checks exactly these keys against the checkpoint, and names where each was set."""
    cfgfile = tmp_path / "c.py"
    cfgfile.write_text("batch_size = 4\n")
    configure(_cfg(), [str(cfgfile), "--out_dir=x"])
    assert configurator.given == {"batch_size": str(cfgfile), "out_dir": "--out_dir=x"}
    configure(_cfg(), [str(cfgfile), "--batch_size=8"])
    assert configurator.given == {"batch_size": "--batch_size=8"}  # the flag, typed after the file, wins
    configure(_cfg(), [])
    assert configurator.given == {}


KNOWN = {"batch_size": 12, "learning_rate": 1e-3, "out_dir": "out", "compile": False, "top_k": None}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(sorted(KNOWN)), st.text(min_size=1, max_size=20)), st.text(max_size=40))
def test_property_configurator_parses_or_fails_cleanly(key, value):
    """Any --key=value: either it is rejected in one line (exit 2) and nothing changed, or a known key took
    a value of its default's type. Keys are mostly the known ones, so that bad values for them are tried."""
    g = dict(KNOWN)
    before = dict(g)
    try:
        configure(g, [f"--{key}={value}"])
    except SystemExit as e:
        assert e.code == 2
        assert g == before  # a rejected flag changes nothing
        return
    assert set(g) == set(before)  # only known keys can be set
    changed = [k for k in g if g[k] != before[k]]
    assert all(before[k] is None or type(g[k]) is type(before[k]) for k in changed)


def test_only_train_runs_under_torchrun_and_ranks_name_their_errors(monkeypatch, capsys):
    """Under torchrun (WORLD_SIZE > 1) every script but train.py refuses in one line: each rank would
    run it whole and write the same files (two finetunes raced on ckpt.next.pt and one replaced the good
    checkpoint). A rank other than 0 names itself in its error line."""
    import sys
    monkeypatch.setattr(sys, "argv", ["finetune_instr.py", "--max_iters=3"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    g = {"max_iters": 10}
    with pytest.raises(SystemExit):
        configure(g)
    err = capsys.readouterr().err
    assert err == ("[rank 1] error: finetune_instr.py runs as one process: start it with python, not torchrun "
                   "(train.py is the script that trains on several)\n")
    assert configure(g, torchrun=True) == {"max_iters": 3}  # train.py's call
    assert configure({"max_iters": 10}, []) == {"max_iters": 10}  # imported (tests, bench): no check
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1 is one process
    assert configure(g) == {"max_iters": 3}
    monkeypatch.delenv("WORLD_SIZE")  # a lone RANK (some cluster launchers set one): no rank prefix
    with pytest.raises(SystemExit):
        configurator.fail("x")
    assert capsys.readouterr().err == "error: x\n"
