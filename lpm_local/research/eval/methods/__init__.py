"""The compared methods, all behind one interface (``base.Method``), built by name."""

from __future__ import annotations

from lpm_local.errors import BadInput
from lpm_local.research.eval.method_names import (  # noqa: F401 - re-exported, the registry's names
    DEFAULT_METHODS,
    FITTED,
    METHODS,
    RECALL_METHODS,
)
from lpm_local.research.eval.methods.base import (
    DEFAULT_LRS,
    BackboneMethod,
    Conditioning,
    Method,
    MethodSettings,
    UserState,
)


def method_class(name: str) -> type[BackboneMethod]:
    """The class for a method name (imports only what that method needs)."""
    if name == "no_memory":
        from lpm_local.research.eval.methods.no_memory import NoMemory as cls
    elif name == "full_context":
        from lpm_local.research.eval.methods.full_context import FullContext as cls
    elif name == "retrieval":
        from lpm_local.research.eval.methods.retrieval import Retrieval as cls
    elif name == "prompt_tuning":
        from lpm_local.research.eval.methods.prompt_tuning import PromptTuning as cls
    elif name == "lora":
        from lpm_local.research.eval.methods.lora import PerUserLora as cls
    elif name == "lpm":
        from lpm_local.research.eval.methods.lpm import LatentPersonalMemory as cls
    elif name == "e2p":
        from lpm_local.research.eval.methods.e2p import SingleVectorPrefix as cls
    elif name == "lpm_untrained":
        from lpm_local.research.eval.methods.lpm_ablations import UntrainedProjectorLpm as cls
    elif name == "lpm_unfitted":
        from lpm_local.research.eval.methods.lpm_ablations import UnfittedLpm as cls
    elif name == "lpm_bank":
        from lpm_local.research.eval.methods.lpm_bank import RoutedBankLpm as cls
    else:
        raise BadInput(f"unknown method {name!r}", hint=f"choose from {', '.join(METHODS)}")
    return cls


def build_method(name: str, backbone, settings: MethodSettings | None = None) -> BackboneMethod:
    return method_class(name)(backbone, settings)


__all__ = [
    "DEFAULT_LRS",
    "DEFAULT_METHODS",
    "FITTED",
    "METHODS",
    "RECALL_METHODS",
    "BackboneMethod",
    "Conditioning",
    "Method",
    "MethodSettings",
    "UserState",
    "build_method",
    "method_class",
]
