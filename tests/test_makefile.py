"""The Makefile's recipes, read with `make -n -B` (print every command, run none): what `make demo`
installs and runs, against the README's stage table."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def recipe(target):
    r = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_demo_installs_only_the_runtime_requirements_and_test_adds_the_dev_tools():
    demo, test = recipe("demo"), recipe("test")
    demo_installs = [line for line in demo if "pip install" in line]
    assert demo_installs and all(line.endswith("-r requirements.txt") for line in demo_installs)
    test_installs = [line for line in test if "pip install" in line]
    assert [line.split()[-1] for line in test_installs] == ["requirements.txt", "requirements-dev.txt"]
    assert any("pytest" in line for line in test)


def test_the_readmes_demo_stages_are_the_commands_make_demo_runs():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = readme[readme.index("What `make demo` runs, stage by stage"):]
    table = table[:table.index("\n\n", table.index("| stage |"))]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`python " in line]
    stages = {row.split("|")[1].strip(): re.search(r"`python ([^`]+)`", row).group(1) for row in rows}
    assert {"prepare", "pretrain", "instruction", "classification"} <= set(stages)
    demo = recipe("demo")
    for stage, command in stages.items():
        if stage == "answers":  # a shell loop over the three questions in the Makefile
            command = command.split(" --prompt=")[0]
        assert any(f".venv/bin/python {command}" in line for line in demo), (stage, command)
