"""Slot fitting (the refit core): only a user's slots move; projector and backbone are frozen.

``fit_slots`` is what the app runs in the background after new turns or an import, and what
the experiment runs for every method, so prompt tuning (``projector=None``) and LPM get the
same optimiser, steps, learning rate and windows.

- Adam on the slots only. Gradients are taken with ``torch.autograd.grad`` w.r.t. the slots,
  so no ``.grad`` is ever written into the shared projector or the backbone.
- Early stopping on held-out windows: evaluated every ``eval_every`` steps; the best slots are
  returned; ``patience`` evaluations without improvement stop the fit.
- Cancellable (``cancel`` event, checked every step) and reporting (``progress`` callback).
- The input slots are never modified: the caller's current memory version stays intact even
  when the fit fails half way.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lpm_local.memory.lm import mean_loss, resolve_model, soft_for
from lpm_local.memory.windows import Window


@dataclass(frozen=True)
class FitProgress:
    step: int
    steps: int
    train_loss: float
    heldout_loss: float | None  # set on evaluation steps


@dataclass
class FitResult:
    slots: torch.Tensor  # [N, d_s] fp32, detached, on CPU: the best slots found
    train_losses: list[float]
    heldout_loss_before: float | None
    heldout_loss_after: float | None
    steps_run: int
    seconds: float
    best_step: int = 0
    stopped: str = "steps"  # "steps" | "early" | "cancelled"
    heldout_history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def improved(self) -> bool:
        """Whether the held-out loss went down: the app writes a new version only then."""
        if self.heldout_loss_before is None or self.heldout_loss_after is None:
            return False
        return self.heldout_loss_after < self.heldout_loss_before


def fit_slots(
    model_or_engine,
    projector,
    init_slots: torch.Tensor,
    train_windows: Sequence[Window],
    heldout_windows: Sequence[Window] = (),
    *,
    steps: int = 30,
    lr: float = 1e-2,
    batch_size: int = 8,
    eval_every: int = 5,
    patience: int = 2,
    seed: int = 0,
    cancel: threading.Event | None = None,
    progress: Callable[[FitProgress], None] | None = None,
) -> FitResult:
    """Fit one user's slots [N, d_s] to ``train_windows`` (LM loss on their targets).

    ``projector=None`` fits the slots as a plain soft prompt (prompt tuning). With no held-out
    windows there is no early stopping and the last slots are returned."""
    if steps < 0 or lr <= 0 or batch_size < 1 or eval_every < 1 or patience < 1:
        raise ValueError(
            f"bad fit settings: steps={steps} lr={lr} batch_size={batch_size} "
            f"eval_every={eval_every} patience={patience}"
        )
    if not train_windows:
        raise ValueError("fit_slots needs at least one training window")
    model = resolve_model(model_or_engine)
    device = model.get_input_embeddings().weight.device
    started = time.perf_counter()
    slots = init_slots.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([slots], lr=lr)
    batches = _batches(list(train_windows), batch_size, seed)
    heldout = list(heldout_windows)

    def evaluate() -> float | None:
        if not heldout:
            return None
        with torch.no_grad():
            return _loss(model, projector, slots, heldout).item()

    before = evaluate()
    best, best_loss, best_step, bad_evals = slots.detach().clone(), before, 0, 0
    history = [(0, before)] if before is not None else []
    losses: list[float] = []
    stopped, step = "steps", 0
    for step in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            stopped, step = "cancelled", step - 1
            break
        loss = _loss(model, projector, slots, next(batches))
        (grad,) = torch.autograd.grad(loss, [slots])
        slots.grad = grad
        optimizer.step()
        slots.grad = None
        losses.append(loss.item())
        held = evaluate() if heldout and (step % eval_every == 0 or step == steps) else None
        if held is not None:
            history.append((step, held))
            if held < best_loss:
                best, best_loss, best_step, bad_evals = slots.detach().clone(), held, step, 0
            else:
                bad_evals += 1
        if progress is not None:
            progress(FitProgress(step, steps, losses[-1], held))
        if bad_evals >= patience:
            stopped = "early"
            break
    final = best if heldout else slots.detach().clone()
    return FitResult(
        slots=final.cpu(),
        train_losses=losses,
        heldout_loss_before=before,
        heldout_loss_after=best_loss if heldout else None,
        steps_run=step,
        seconds=time.perf_counter() - started,
        best_step=best_step if heldout else step,
        stopped=stopped,
        heldout_history=history,
    )


def _loss(model, projector, slots: torch.Tensor, windows: Sequence[Window]) -> torch.Tensor:
    return mean_loss(model, soft_for(model, projector, slots, windows), windows)


def _batches(windows: list[Window], batch_size: int, seed: int):
    """All windows each step when they fit in a batch; else seeded shuffled passes."""
    if len(windows) <= batch_size:
        while True:
            yield windows
    rng = random.Random(seed)
    while True:
        order = windows[:]
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield order[i : i + batch_size]


def evaluate_loss(
    model_or_engine, projector, slots: torch.Tensor | None, windows: Sequence[Window]
) -> float:
    """Mean target loss of ``windows`` under these slots (``slots=None``: memory off)."""
    model = resolve_model(model_or_engine)
    with torch.no_grad():
        soft = None if slots is None else soft_for(model, projector, slots.float(), windows)
        return mean_loss(model, soft, windows).item()
