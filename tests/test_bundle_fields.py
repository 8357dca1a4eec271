"""Bundle manifest fields that later code acts on (issue 15.5): one crafted field per case.

``memory.config_json`` becomes the stored version's config (``lpm memory show``, the inspector
and refits read it back); ``backbone`` names the model they load. Each crafted value is refused
with a message naming the field, and the store is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from test_bundle_hostile import CONFIG, _good_blob, _state, make_bundle

from lpm_local.data.bundle.format import Manifest, MemberInfo, MemoryInfo
from lpm_local.data.bundle.restore import import_bundle
from lpm_local.errors import BadInput
from lpm_local.storage.store import Store


def _manifest(blob: bytes, *, config_json: str | None, backbone: str | None) -> bytes:
    members = {
        name: MemberInfo(hashlib.sha256(data).hexdigest(), len(data))
        for name, data in {
            "slots.json": b"{}",
            "audit.jsonl": b"",
            "memory.safetensors": blob,
        }.items()
    }
    memory = MemoryInfo(members["memory.safetensors"].sha256, config_json, None, None, None, None)
    return Manifest(
        "2026-01-01T00:00:00+00:00", "victim", None, backbone, None, memory, False, members
    ).to_bytes()


def _config(**changes) -> str:
    raw = json.loads(CONFIG.to_json())
    raw.update(changes)
    return json.dumps(raw)


CRAFTED = [
    ("config-not-json", {"config_json": "{not json"}, r"config_json is not JSON"),
    ("config-a-list", {"config_json": "[1, 2]"}, r"config_json is not a JSON object"),
    ("config-unknown-key", {"config_json": _config(evil=1)}, r"unknown keys"),
    ("config-string-int", {"config_json": _config(heads="4")}, r"heads must be int"),
    ("config-float-int", {"config_json": _config(n_slots=4.0)}, r"n_slots must be int"),
    ("config-bool-int", {"config_json": _config(head_dim=True)}, r"head_dim must be int"),
    (
        "config-string-bool",
        {"config_json": _config(identity_path="yes")},
        r"identity_path must be bool",
    ),  # noqa: E501
    (
        "config-nan",
        {"config_json": _config(init_noise=float("nan"))},
        r"config_json is not JSON|init_noise must be float",
    ),  # noqa: E501
    ("config-negative", {"config_json": _config(heads=-1)}, r"must be a positive int"),
    (
        "config-too-many-tokens",
        {"config_json": _config(salient_max_tokens="lots")},
        r"salient_max_tokens must be int",
    ),  # noqa: E501
    (
        "config-differs-from-blob",
        {"config_json": _config(heads=8)},
        r"differs from the memory blob",
    ),  # noqa: E501
    (
        "backbone-path",
        {"backbone": "/tmp/evil-model"},
        r"backbone '/tmp/evil-model' is not a known",
    ),  # noqa: E501
    ("backbone-relative", {"backbone": "../../models/x"}, r"is not a known backbone"),
    ("backbone-unknown-name", {"backbone": "gpt-5"}, r"is not a known backbone. known: "),
]


@pytest.mark.parametrize(("name", "fields", "message"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_field_is_refused_and_nothing_changes(name, fields, message, tmp_path, lpm_home):
    blob = _good_blob()
    kwargs = {"config_json": CONFIG.to_json(), "backbone": "smollm2-135m", **fields}
    bundle = make_bundle(tmp_path / f"{name}.lpm", blob, manifest=_manifest(blob, **kwargs))
    with Store.open() as store:
        store.active_profile()
        before = _state(store, lpm_home)
        with pytest.raises(BadInput, match=message) as info:
            import_bundle(store, bundle)
        assert "\n" not in str(info.value) and bundle.name in str(info.value)
        assert _state(store, lpm_home) == before


def test_a_valid_bundle_with_a_registry_backbone_is_restored(tmp_path):
    blob = _good_blob()
    manifest = _manifest(blob, config_json=CONFIG.to_json(), backbone="smollm2-135m")
    bundle = make_bundle(tmp_path / "ok.lpm", blob, manifest=manifest)
    with Store.open() as store:
        result = import_bundle(store, bundle)
        version = store.current_memory_version(store.get_profile(result.profile).id)
    assert version is not None and version.backbone == "smollm2-135m"
    assert json.loads(version.config_json) == json.loads(CONFIG.to_json())
