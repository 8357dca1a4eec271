"""The manifest fields that later code acts on, checked before anything is stored.

A bundle's ``memory.config_json`` becomes the memory version's config, which ``lpm memory
show``, the TUI inspector and every refit read back; its ``backbone`` names the model those
load. So the config must be a valid ``MemoryConfig`` with every value of its field's type (JSON
``"yes"`` is not a boolean, ``8.0`` not an int) and equal to the config inside the memory blob,
and the backbone must be a name in the backbone registry: a local path in a file from elsewhere
would make the app load whatever lies there.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields

from lpm_local.backbones import registry
from lpm_local.data.importers.fields import short
from lpm_local.errors import BadBundle
from lpm_local.memory.config import MemoryConfig


def checked_config(text: str, where: str) -> MemoryConfig:
    """``text`` as a ``MemoryConfig``, every field of its declared type, or ``BadBundle``."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise BadBundle("memory.config_json is not JSON", where=where) from None
    if not isinstance(raw, dict):
        raise BadBundle("memory.config_json is not a JSON object", where=where)
    defaults = MemoryConfig()
    for f in fields(MemoryConfig):
        if f.name not in raw:
            continue
        value, default = raw[f.name], getattr(defaults, f.name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
        if not ok:
            kind = type(default).__name__
            raise BadBundle(
                f"memory.config_json: {f.name} must be {kind}, got {short(repr(value))}",
                where=where,
            )
    try:
        return MemoryConfig.from_json(text)
    except (ValueError, TypeError) as exc:
        raise BadBundle(f"memory.config_json: {short(str(exc), 160)}", where=where) from None


def check_backbone(name: str | None, where: str) -> None:
    """A backbone named by a bundle must be one of the registry's names (or absent)."""
    if name is None or name in registry.names():
        return
    raise BadBundle(
        f"backbone {short(name, 80)!r} is not a known backbone",
        where=where,
        hint="known: " + ", ".join(registry.names()),
    )
