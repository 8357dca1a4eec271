"""R1: kill -9 during refit commits. After every kill: ``integrity_check`` ok, the current memory
is one of the versions that were written (sha256 verified, the blob parses), and there is no
stray version (each one came with its committed refit row).

The child runs the very commit path of a refit (``locked_refit`` -> ``start_refit`` ->
``versions.commit_version``, which prunes too) in a tight loop, without torch so it starts fast;
the kill lands at a random moment, mostly inside a commit transaction (fsyncs dominate).
A slower variant kills a real ``run_refit`` on the tiny Qwen3.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.scheduler import locked_refit
from lpm_local.memory.slots import slots_from_bytes, slots_to_bytes
from lpm_local.memory.versions import DEFAULT_POLICY
from lpm_local.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]

COMMIT_LOOP = r"""
import sys
from pathlib import Path
from lpm_local.memory.scheduler import locked_refit
from lpm_local.memory.versions import VersionBlob, commit_version
from lpm_local.storage.store import Store

blobs = [p.read_bytes() for p in sorted(Path(sys.argv[1]).glob("*.st"))]
store = Store.open()
pid = store.get_profile("default").id

def one(i):
    base = store.get_profile_by_id(pid).current_version_id
    refit_id = store.start_refit(pid, base)
    blob = VersionBlob(tensors=blobs[i % len(blobs)], backbone="kill-test", projector_sha256=None,
                       config_json="{}", train_loss=1.0, heldout_loss=1.0, reason="kill test",
                       trained_through_message_id=None)
    commit_version(store, pid, refit_id=refit_id, base_version_id=base, blob=blob)

print("ready", flush=True)
i = 0
while True:
    locked_refit(store, pid, lambda: one(i))
    i += 1
"""

REAL_REFIT = r"""
import sys
import torch
torch.set_num_threads(1)
from lpm_local.backbones.loader import load_backbone
from lpm_local.memory.frozen import load_frozen_memory
from lpm_local.memory.refit import RefitSettings, run_refit
from lpm_local.memory.scheduler import locked_refit
from lpm_local.storage.store import Store

frozen = load_frozen_memory(load_backbone(sys.argv[1], quantize="none", device="cpu"))
store = Store.open()
pid = store.get_profile("default").id
settings = RefitSettings(steps=4, eval_every=1, max_windows=8)
print("ready", flush=True)
while True:
    locked_refit(store, pid, lambda: run_refit(store, frozen, pid, settings=settings))
"""


def _blobs(folder: Path, n: int = 8) -> set[str]:
    """Valid, distinct slot blobs for the child; returns their sha256s."""
    folder.mkdir()
    config = MemoryConfig(hidden_size=16, slot_dim=16, heads=4, head_dim=4)
    digests = set()
    for i in range(n):
        blob = slots_to_bytes(
            torch.randn(8, 16, generator=torch.Generator().manual_seed(i)), config
        )
        (folder / f"{i:02d}.st").write_bytes(blob)
        digests.add(hashlib.sha256(blob).hexdigest())
    return digests


def _spawn(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    line = child.stdout.readline()
    if line.strip() != b"ready":
        child.kill()
        raise AssertionError(f"child did not start: {child.stderr.read().decode()[-2000:]}")
    return child


def _check(known: set[str], initial: int) -> tuple[int | None, int]:
    """What a kill during a commit must leave: an intact file, the old or the new version with
    its sha256, no stray versions; returns (current version id, running refit rows left)."""
    with Store.open() as store:  # quick_check on open
        assert store._scalar("PRAGMA integrity_check") == "ok"
        profile = store.get_profile("default")
        current = store.current_memory_version(profile.id)  # sha256 verified by the store
        assert current is not None
        slots_from_bytes(current.tensors)  # shape, dtype, finiteness
        assert current.sha256 in known
        refits = store.list_refits(profile.id)
        committed = {r.new_version_id for r in refits if r.status == "committed"}
        versions = store.list_memory_versions(profile.id)
        stray = [v.id for v in versions if v.id != initial and v.id not in committed]
        assert not stray, f"versions without a committed refit: {stray}"
        assert len(versions) <= DEFAULT_POLICY.parents + 2
        running = sum(r.status == "running" for r in refits)
        assert running <= 1
        return current.id, running


def _kill_loop(
    tmp_path: Path,
    kills: int,
    code: str,
    args: tuple[str, ...],
    delay: tuple[float, float],
    known: set[str] | None = None,
) -> list[int | None]:
    with Store.open() as store:
        profile = store.ensure_profile()
        blob = (tmp_path / "blobs" / "00.st").read_bytes() if known else None
        if blob is not None:
            initial = store.add_memory_version(
                profile.id,
                tensors=blob,
                backbone="kill-test",
                projector_sha256=None,
                config_json="{}",
            ).id
        else:
            initial = None
    rng = random.Random(1)
    currents = []
    for _ in range(kills):
        child = _spawn(code, *args)
        time.sleep(rng.uniform(*delay))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
        if known is not None:
            current, _ = _check(known, initial)
            currents.append(current)
    with Store.open() as store:  # the next refit's lock holder marks the dead refit failed
        profile = store.get_profile("default")
        locked_refit(store, profile.id, lambda: None)
        assert all(r.status != "running" for r in store.list_refits(profile.id))
    return currents


def test_kill_9_during_refit_commits_a_few_times(tmp_path):
    known = _blobs(tmp_path / "blobs")
    currents = _kill_loop(tmp_path, 4, COMMIT_LOOP, (str(tmp_path / "blobs"),), (0.2, 0.6), known)
    assert currents[-1] != currents[0] or len(set(currents)) > 1  # commits did happen


@pytest.mark.slow
def test_kill_9_during_refit_commits_100_times(tmp_path):
    known = _blobs(tmp_path / "blobs")
    currents = _kill_loop(
        tmp_path, 100, COMMIT_LOOP, (str(tmp_path / "blobs"),), (0.05, 0.5), known
    )
    assert len(set(currents)) > 10  # the kills landed between many different commits


@pytest.mark.slow
def test_kill_9_during_a_real_refit_leaves_memory_unchanged_or_new(tmp_path, tiny_qwen3_dir):
    with Store.open() as store:
        profile = store.ensure_profile()
        conv = store.create_conversation(profile.id, "c")
        for i in range(6):
            store.add_message(conv.id, "user", f"I like tea number {i}.")
            store.add_message(conv.id, "assistant", "Noted.")
    for _ in range(3):
        _kill_loop(tmp_path, 1, REAL_REFIT, (str(tiny_qwen3_dir),), (0.5, 3.0))
        with Store.open() as store:
            assert store._scalar("PRAGMA integrity_check") == "ok"
            profile = store.get_profile("default")
            versions = store.list_memory_versions(profile.id)
            committed = {
                r.new_version_id for r in store.list_refits(profile.id) if r.status == "committed"
            }
            assert {v.id for v in versions} <= committed
            current = store.current_memory_version(profile.id)
            if current is not None:
                slots_from_bytes(current.tensors)
