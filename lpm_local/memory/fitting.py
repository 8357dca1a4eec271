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
    # fit_slots(rank=...): the low-rank change (A [N, r], B [r, d_s]) that ``slots`` holds
    change: tuple[torch.Tensor, torch.Tensor] | None = None

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
    rank: int | None = None,
    change: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> FitResult:
    """Fit one user's slots [N, d_s] to ``train_windows`` (LM loss on their targets).

    ``projector=None`` fits the slots as a plain soft prompt (prompt tuning). With no held-out
    windows there is no early stopping and the last slots are returned.

    ``rank=r`` fits a low-rank change instead of every slot number: slots = init + A @ B with
    A [N, r] (zero at the start, so the fit starts at ``init``) and B [r, d_s] both trained,
    as LoRA does for a weight matrix. What the fit learns is then (N + d_s) * r numbers.
    ``change=(A, B)`` goes on from an earlier fit's change instead (its rank wins over ``rank``);
    the slots it starts from are then ``init_slots + A @ B``."""
    if (
        steps < 0
        or lr <= 0
        or batch_size < 1
        or eval_every < 1
        or patience < 1
        or (rank is not None and not 1 <= rank <= min(init_slots.shape))
    ):
        raise ValueError(
            f"bad fit settings: steps={steps} lr={lr} batch_size={batch_size} "
            f"eval_every={eval_every} patience={patience} rank={rank}"
        )
    if not train_windows:
        raise ValueError("fit_slots needs at least one training window")
    model = resolve_model(model_or_engine)
    device = model.get_input_embeddings().weight.device
    started = time.perf_counter()
    start = init_slots.detach().to(device=device, dtype=torch.float32).clone()
    batches = _batches(list(train_windows), batch_size, seed)
    if change is not None:
        a, b = (t.detach().to(device=device, dtype=torch.float32).clone() for t in change)
        if a.shape != (start.shape[0], a.shape[1]) or b.shape != (a.shape[1], start.shape[1]):
            raise ValueError(
                f"change of shapes {tuple(a.shape)} x {tuple(b.shape)} does not fit slots "
                f"{tuple(start.shape)}"
            )
    elif rank is not None:
        gen = torch.Generator().manual_seed(seed)
        # A random B, its entries at 1/sqrt(r): one Adam step of A then moves each slot number
        # by about ``lr``, as a full fit's first step does. Measured on two 16-fact personas
        # (Qwen2.5-0.5B, rank 8, the app's refit): 8 and 8 facts answered, the full fit 9 and
        # 10. B started along the first gradient's top directions (as LoRA-GA does) and turned
        # 10x faster (as LoRA+ does): 6 and 3. The held-out loss fell further (3.59 -> 2.36
        # against 2.91), but every group then moved along the same few directions and the
        # answers ran facts together ("You drive an old red red kale vegetable").
        b = (torch.randn(rank, start.shape[1], generator=gen) / rank**0.5).to(device)
        a = torch.zeros(start.shape[0], rank, device=device)
    if change is None and rank is None:
        slots = start.requires_grad_(True)
        params = [slots]
    else:
        params = [a.requires_grad_(True), b.requires_grad_(True)]
        slots = _LowRank(start, a, b)
    optimizer = torch.optim.Adam(params, lr=lr)
    heldout = list(heldout_windows)

    def evaluate() -> float | None:
        if not heldout:
            return None
        with torch.no_grad():
            return _loss(model, projector, _value(slots), heldout).item()

    before = evaluate()
    best, best_loss, best_step, bad_evals = _snapshot(slots), before, 0, 0
    history = [(0, before)] if before is not None else []
    losses: list[float] = []
    stopped, step = "steps", 0
    for step in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            stopped, step = "cancelled", step - 1
            break
        loss = _loss(model, projector, _value(slots), next(batches))
        grads = torch.autograd.grad(loss, params)
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
        for param in params:
            param.grad = None
        losses.append(loss.item())
        held = evaluate() if heldout and (step % eval_every == 0 or step == steps) else None
        if held is not None:
            history.append((step, held))
            if held < best_loss:
                best, best_loss, best_step, bad_evals = _snapshot(slots), held, step, 0
            else:
                bad_evals += 1
        if progress is not None:
            progress(FitProgress(step, steps, losses[-1], held))
        if bad_evals >= patience:
            stopped = "early"
            break
    final, final_change = best if heldout else _snapshot(slots)
    return FitResult(
        slots=final.cpu(),
        change=None if final_change is None else tuple(t.cpu() for t in final_change),
        train_losses=losses,
        heldout_loss_before=before,
        heldout_loss_after=best_loss if heldout else None,
        steps_run=step,
        seconds=time.perf_counter() - started,
        best_step=best_step if heldout else step,
        stopped=stopped,
        heldout_history=history,
    )


@dataclass(frozen=True)
class _LowRank:
    """Slots as ``start + a @ b`` (``fit_slots(rank=...)``)."""

    start: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor


def _value(slots) -> torch.Tensor:
    return slots.start + slots.a @ slots.b if isinstance(slots, _LowRank) else slots


def _snapshot(slots) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """(slots, change) as they are now, detached copies."""
    with torch.no_grad():
        value = _value(slots).detach().clone()
    if isinstance(slots, _LowRank):
        return value, (slots.a.detach().clone(), slots.b.detach().clone())
    return value, None


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
