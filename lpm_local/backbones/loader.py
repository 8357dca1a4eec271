"""Loading a frozen backbone: registry name or local directory -> model + tokenizer.

Every backbone ends on the same path: a local Hugging Face directory loaded with
``AutoModelForCausalLM.from_pretrained`` (safetensors only, no remote code), optionally through
bitsandbytes NF4. A hub name is first resolved to its snapshot in the HF cache (downloaded once
if the hub can be reached); the embedded GGUF backbone is first converted into the lpm cache
(``gguf_cache``). Tests take this very path with a tiny Qwen3 saved to a temp dir.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from lpm_local import locations
from lpm_local.backbones import gguf_cache, gguf_parts
from lpm_local.backbones.registry import BackboneSpec, default_name, registry
from lpm_local.errors import BadInput, ModelNotAvailable

if TYPE_CHECKING:
    # torch is imported inside the functions that load a model, so `lpm models` (status only)
    # and every other command that needs no model start without it (~3-5 s on a small CPU).
    import torch

Progress = Callable[[str, "float | None"], None]

# What a hub snapshot needs; skips README/LICENSE, original/ checkpoints and pickles.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]
# Window assumed for a local directory whose config names none.
FALLBACK_CONTEXT = 2048


@dataclass(eq=False)
class Backbone:
    """A frozen causal LM (eval mode, no parameter takes a gradient) and its tokenizer.

    ``dtype`` is the dtype of the input embeddings, i.e. what a soft prefix is cast to; with NF4
    the linear layers compute in that dtype too (bf16 on CUDA, fp32 on CPU).
    """

    name: str
    model: torch.nn.Module = field(repr=False)
    tokenizer: object = field(repr=False)  # a transformers tokenizer with a chat template
    device: torch.device
    dtype: torch.dtype
    hidden_size: int
    context_window: int
    quantization: str  # "nf4" | "none"

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings: ids [B, T] (long) -> [B, T, hidden] in ``dtype``.

        Goes through ``get_input_embeddings()`` so models that scale their embeddings inside the
        embedding module (Gemma) are embedded exactly as ``model(input_ids)`` would embed them.
        """
        return self.model.get_input_embeddings()(ids.to(self.device))


def default_backbone_name() -> str:
    """The registry's ``default_for`` entry for this machine: Qwen3-4B where CUDA is present,
    else the embedded Qwen2.5-Coder-0.5B (no GPU, no download; registry.toml says why)."""
    return default_name(cuda=cuda_available())


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU, without importing torch where the answer is certain.

    A CPU-only torch wheel carries the local version tag ``+cpu`` (and no torch at all means no
    GPU either): there the answer is no and the ~3 s torch import is saved. Any other build asks
    torch itself.
    """
    import sys
    from importlib import metadata

    if "torch" not in sys.modules:
        try:
            version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            return False
        if version.endswith("+cpu"):
            return False
    import torch

    return torch.cuda.is_available()


def load_backbone(
    name_or_path: str | None = None,
    *,
    quantize: str | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> Backbone:
    """Load a registry backbone by name, or any local HF directory, frozen.

    ``quantize``: ``"nf4"`` | ``"none"`` | None (the registry default; NF4 for a local dir).
    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (None: CUDA if present).
    ``progress(stage, fraction or None)`` hears every slow step (conversion, download, load).
    Raises ``ModelNotAvailable`` (one line) when the weights cannot be had here.
    """
    report = progress or _silent
    dev = _resolve_device(device)
    if quantize not in (None, "nf4", "none"):
        raise BadInput(f"unknown quantization {quantize!r}", hint="use nf4 or none")
    target = name_or_path or default_backbone_name()
    spec = registry().get(target)
    if spec is None:
        folder = _local_dir(target)
        name, context, quant = str(folder), None, quantize or "nf4"
    else:
        folder = _resolve_spec(spec, report)
        name, context = spec.name, spec.context_window
        quant = quantize or spec.default_quantization(dev.type == "cuda")
    return _load_dir(folder, name=name, quant=quant, device=dev, context=context, report=report)


def backbone_status(spec: BackboneSpec) -> str:
    """A short word on whether ``spec`` would load right now (for ``lpm models``), no loading."""
    if spec.source == "gguf":
        target = locations.model_cache_dir(spec.name)
        if gguf_cache.is_cache_valid(target, None):
            return "ready"
        try:
            _gguf_source(spec)
        except ModelNotAvailable:
            if spec.is_multipart:
                return f"needs {spec.packages[0]} ... {spec.packages[-1]}"
            return f"needs {spec.gguf_package}"
        return (
            "ready (assembles and converts once)" if spec.is_multipart else "ready (converts once)"
        )
    if _cached_snapshot(spec.hub_id) is not None:
        return "ready"
    return f"not downloaded (~{spec.download_gb:g} GB)"


def _resolve_device(device: str | None) -> torch.device:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BadInput(f"unknown device {device!r}", hint="use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelNotAvailable(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    if dev.type not in ("cpu", "cuda"):
        raise BadInput(f"unsupported device {device!r}", hint="use cpu or cuda")
    return dev


def _local_dir(target: str) -> Path:
    folder = Path(target).expanduser()
    if folder.is_dir():
        return folder
    known = ", ".join(registry())
    raise ModelNotAvailable(
        f"unknown backbone {target!r}: not one of {known}, and not a local model directory"
    )


def _resolve_spec(spec: BackboneSpec, report: Progress) -> Path:
    if spec.source == "hub":
        return _hub_snapshot(spec, report)
    target = locations.model_cache_dir(spec.name)
    try:
        source = _gguf_source(spec)
    except ModelNotAvailable:
        if gguf_cache.is_cache_valid(target, None):
            return target  # the package was removed after conversion: the cache still serves
        raise
    return gguf_cache.ensure_gguf_cache(spec.name, source, progress=report, target=target)


def _gguf_source(spec: BackboneSpec) -> Path | gguf_parts.GgufParts:
    """The installed GGUF of ``spec``: one file, or its located parts (not yet assembled)."""
    if spec.is_multipart:
        return spec.locate_parts()
    return gguf_cache.gguf_source(spec.gguf_module, spec.gguf_file, install_hint=spec.install_hint)


def _cached_snapshot(hub_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss (not cached, partial, bad cache) means "no"
        return None


def _hub_snapshot(spec: BackboneSpec, report: Progress) -> Path:
    """The local snapshot of a hub model; downloads it once when the hub can be reached."""
    from huggingface_hub import constants, snapshot_download

    cached = _cached_snapshot(spec.hub_id)
    if cached is not None:
        return cached
    hint = "connect once to download it, or pass --model PATH to a local copy"
    if constants.HF_HUB_OFFLINE:
        raise ModelNotAvailable(
            f"{spec.hub_id} is not downloaded and HF_HUB_OFFLINE is set: {hint}"
        )
    if not _hub_reachable(constants.ENDPOINT):
        raise ModelNotAvailable(
            f"{spec.hub_id} is not downloaded and {constants.ENDPOINT} cannot be reached: {hint}"
        )
    report(f"downloading {spec.hub_id} (~{spec.download_gb:g} GB, first use only)", None)
    try:
        return Path(snapshot_download(spec.hub_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - network/auth/disk errors all end the same way
        raise ModelNotAvailable(f"could not download {spec.hub_id}: {_first_line(exc)}") from exc


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """A 3 s TCP probe, so a machine without network fails at once instead of after ~45 s of
    retries. Behind a proxy the probe says nothing, so the download itself is tried."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_dir(
    folder: Path,
    *,
    name: str,
    quant: str,
    device: torch.device,
    context: int | None,
    report: Progress,
) -> Backbone:
    _check_dir(folder)
    report("loading tokenizer", None)
    tokenizer = _load_tokenizer(folder)
    report(f"loading weights ({'NF4' if quant == 'nf4' else 'unquantized'}) on {device}", None)
    model = _load_model(folder, quant=quant, device=device)
    model.eval()
    model.requires_grad_(False)  # frozen: only a soft prefix (or slots) ever take gradients
    embeddings = model.get_input_embeddings()
    config = model.config.get_text_config()
    window = context or getattr(config, "max_position_embeddings", None) or FALLBACK_CONTEXT
    report("model ready", 1.0)
    return Backbone(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=embeddings.weight.dtype,
        hidden_size=embeddings.embedding_dim,
        context_window=int(window),
        quantization=quant,
    )


def _check_dir(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelNotAvailable(f"{folder} has no config.json: not a Hugging Face model directory")
    if not any(folder.glob("*.safetensors")):
        pickles = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
        why = " (pickle checkpoints .bin/.pt are refused)" if pickles else ""
        raise ModelNotAvailable(f"{folder} has no model weights in safetensors format{why}")


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        with gguf_cache.quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailable(
            f"cannot load the tokenizer in {folder}: {_first_line(exc)}"
        ) from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ModelNotAvailable(
            f"the tokenizer in {folder} has no chat template: lpm needs an instruct/chat model"
        )
    return tokenizer


def _load_model(folder: Path, *, quant: str, device: torch.device) -> torch.nn.Module:
    import torch
    from transformers import AutoModelForCausalLM

    # bf16 on CUDA; fp32 on CPU, where bf16 compute is 25-35x slower without native bf16.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kwargs = dict(
        dtype=dtype, device_map={"": str(device)}, use_safetensors=True, trust_remote_code=False
    )
    if quant == "nf4":
        kwargs["quantization_config"] = _nf4_config(dtype)
    try:
        with gguf_cache.quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailable(f"cannot load the model in {folder}: {_first_line(exc)}") from exc


def _nf4_config(compute_dtype: torch.dtype):
    try:
        import bitsandbytes  # noqa: F401 - only to give a clear line when it is missing
    except ImportError:
        raise ModelNotAvailable(
            "NF4 needs bitsandbytes: pip install bitsandbytes, or pass --quantize none"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,  # ~0.4 bit/param less, at no measurable quality cost
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _silent(stage: str, fraction: float | None = None) -> None:
    return None
