"""Commands that need no model start without torch or transformers.

torch alone costs ~3 s to import on a small CPU, transformers more; a user typing `lpm models`
or `lpm memory status` should not wait for either. Each case runs in a fresh interpreter (the
test process itself has torch loaded), invokes the commands through click's runner there, and
reports which heavy modules got imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers")

# Each entry: the argv of one `lpm` invocation. Run in order in one process, so `profile switch`
# finds the profile `profile create` made.
NO_MODEL_COMMANDS = [
    ["--help"],
    ["--version"],
    ["paths"],
    ["models"],
    ["profile", "list"],
    ["profile", "create", "bob"],
    ["profile", "switch", "bob"],
    ["imports", "list"],
    ["memory", "status"],
    ["memory", "history"],
    ["memory", "off"],
    ["memory", "on"],
    ["memory", "wipe", "--memory-only", "--yes"],
    ["ask", "--help"],
    ["chat", "--help"],
    ["bench", "--help"],
    ["eval", "--help"],
    ["memory", "refit", "--help"],
]

PROBE = """
import json, sys
from click.testing import CliRunner
from lpm_local.cli import main

runner = CliRunner()
codes = []
for argv in json.loads(sys.argv[1]):
    result = runner.invoke(main, argv, catch_exceptions=False)
    codes.append([argv, result.exit_code, result.output[-300:]])
heavy = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def _probe(commands: list[list[str]], home: Path) -> dict:
    env = {**os.environ, "LPM_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands), json.dumps(list(HEAVY))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_model_commands_import_neither_torch_nor_transformers(lpm_home):
    report = _probe(NO_MODEL_COMMANDS, lpm_home)
    failed = [(argv, code, out) for argv, code, out in report["codes"] if code != 0]
    assert not failed, failed
    assert report["heavy"] == [], f"imported by a no-model command: {report['heavy']}"


@pytest.mark.parametrize("command", [["models"], ["memory", "status"], ["paths"]])
def test_each_light_command_alone_stays_light(lpm_home, command):
    # One command per process: an import one command triggers cannot hide behind another's.
    report = _probe([command], lpm_home)
    assert report["codes"][0][1] == 0, report["codes"]
    assert report["heavy"] == []


def test_the_probe_sees_a_heavy_import(lpm_home):
    # The probe itself must be able to fail: `doctor` reports torch's device, so it loads torch.
    report = _probe([["doctor"]], lpm_home)
    assert "torch" in report["heavy"]
