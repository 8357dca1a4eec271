"""`--json` on the list and status commands: valid JSON with the fields a script needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpm_local.cli import main
from lpm_local.data.importing import import_files
from lpm_local.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def run_json(*args: str):
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def history():
    with Store.open() as store:
        import_files(store, [FIXTURES / "sharegpt" / "sharegpt.json"])
        profile = store.active_profile()
        version = store.add_memory_version(
            profile.id,
            tensors=b"x" * 64,
            backbone="x",
            projector_sha256=None,
            config_json=None,
            heldout_loss=0.5,
            trained_through_message_id=store.last_message_id(profile.id),
        )
        store.set_current_version(profile.id, version.id)
        return version.id


def test_memory_status_and_history(history):
    status = run_json("memory", "status")
    assert status["memory_enabled"] is True and status["version"]["id"] == history
    assert status["refit_every"] == 8 and status["versions_kept"] == 1
    (version,) = run_json("memory", "history")
    assert version["id"] == history and version["current"] is True
    assert version["heldout_loss"] == 0.5


def test_imports_and_profiles(history):
    (record,) = run_json("imports", "list")
    assert record["format"] == "sharegpt" and record["n_conversations"] == 2
    (profile,) = run_json("profile", "list")
    assert profile == {
        "name": "default",
        "active": True,
        "conversations": 2,
        "memory_enabled": True,
        "current_version_id": history,
    }


def test_models():
    models = run_json("models")
    assert {"smollm2-135m", "qwen3-4b"} <= {m["name"] for m in models}
    assert sum(m["default"] for m in models) == 1


def test_status_shows_the_configured_refit_interval():
    from lpm_local.settings import save_setting

    save_setting("refit_every", 3)
    assert run_json("memory", "status")["refit_every"] == 3
    text = CliRunner().invoke(main, ["memory", "status"]).output
    assert "a refit runs every 3 in the app" in text


def test_eval_without_its_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    result = CliRunner().invoke(main, ["eval", "--model", "nowhere"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing: peft" in lines[0] and "[eval]" in lines[0]
