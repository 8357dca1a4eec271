"""Attention heatmap: soft-prompt queries (rows) x memory slots (columns), in Unicode blocks.

Each cell is a shade block (``·░▒▓█``) coloured on a dark-to-bright ramp, so it reads on colour
and monochrome terminals alike (and in snapshot SVGs). One scale for the whole map: full
brightness is the largest weight, but never less than twice the uniform weight 2/N, so an
attention spread evenly over the slots reads as an even middle grey, not as "everything hot".
``h`` cycles mean-over-heads / head 0..H-1.
"""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.color import Color
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

SHADES = "·░▒▓█"
LOW, HIGH = Color.parse("#2b4a6b"), Color.parse("#ffd166")
EMPTY = "No attention recorded for this reply (memory off, temporary chat, or not available yet)."


def to_grid(attention: Any) -> list[list[list[float]]]:
    """``[heads, M, N]`` (tensor, array or nested lists) as nested float lists; an [M, N] map
    gets heads=1."""
    values = (
        attention.detach().float().cpu().tolist() if hasattr(attention, "detach") else attention
    )
    if hasattr(values, "tolist"):
        values = values.tolist()
    if values and values[0] and not isinstance(values[0][0], list):
        values = [values]  # a single head given as [M, N]
    return [[[float(x) for x in row] for row in head] for head in values]


def mean_heads(grid: list[list[list[float]]]) -> list[list[float]]:
    heads = len(grid)
    return [
        [sum(grid[h][m][n] for h in range(heads)) / heads for n in range(len(grid[0][m]))]
        for m in range(len(grid[0]))
    ]


def slot_usage(grid: list[list[list[float]]]) -> list[float]:
    """Share of this reply's attention that went to each slot (mean over heads and queries)."""
    mean = mean_heads(grid)
    if not mean:
        return []
    columns = len(mean[0])
    total = sum(sum(row) for row in mean) or 1.0
    return [sum(row[n] for row in mean) / total for n in range(columns)]


class Heatmap(Widget, can_focus=True):
    """Renders one attention map; ``head`` -1 is the mean over heads."""

    BINDINGS = [Binding("h", "next_head", "Next head")]

    head: reactive[int] = reactive(-1)

    def __init__(self, attention: Any = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.grid = to_grid(attention) if attention is not None else []

    def set_attention(self, attention: Any) -> None:
        self.grid = to_grid(attention) if attention is not None else []
        self.head = -1
        self.refresh(layout=True)

    def action_next_head(self) -> None:
        if self.grid:
            self.head = self.head + 1 if self.head + 1 < len(self.grid) else -1

    def matrix(self) -> list[list[float]]:
        if not self.grid:
            return []
        return mean_heads(self.grid) if self.head < 0 else self.grid[self.head]

    def get_content_width(self, container, viewport) -> int:
        matrix = self.matrix()
        if not matrix:
            return len(EMPTY)
        return max(len(self._caption()), 5 + 2 * len(matrix[0]))

    def get_content_height(self, container, viewport, width: int) -> int:
        matrix = self.matrix()
        return 2 + len(matrix) if matrix else 1

    def _caption(self) -> str:
        which = "mean over heads" if self.head < 0 else f"head {self.head} of {len(self.grid)}"
        return f"queries x slots, {which}, brightest {100 * self._scale():.0f}% (h: next head)"

    def _scale(self) -> float:
        matrix = self.matrix()
        if not matrix or not matrix[0]:
            return 1.0
        return max(max(max(row) for row in matrix), 2 / len(matrix[0]))

    def render(self) -> Content:
        matrix = self.matrix()
        if not matrix:
            return Content(EMPTY)
        lines = [Content(self._caption()).stylize("dim")]
        lines.append(
            Content(
                "     "
                + "".join(f"{n:<2}"[:2] if n % 5 == 0 else "  " for n in range(len(matrix[0])))
            ).stylize("dim")
        )
        scale = self._scale()
        for m, row in enumerate(matrix):
            lines.append(Content.assemble(Content(f"q{m:<3} ").stylize("dim"), _row(row, scale)))
        return Content("\n").join(lines)


def _row(row: list[float], scale: float) -> Content:
    parts = []
    for value in row:
        level = max(0.0, min(1.0, value / scale)) if scale > 0 else 0.0
        shade = SHADES[min(len(SHADES) - 1, round(level * (len(SHADES) - 1)))]
        color = LOW.blend(HIGH, level).hex
        parts.append(Content(shade * 2).stylize(f"{color}"))
    return Content.assemble(*parts)
