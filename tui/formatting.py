"""Small, pure formatting helpers shared by the widgets (times, losses, untrusted titles).

Everything here returns plain ``str`` or ``Content``; a ``Content`` built from a plain string is
shown literally, so untrusted text (titles, labels, file names) never becomes markup.
"""

from __future__ import annotations

from datetime import UTC, datetime

from textual.content import Content


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 timestamp (the store's format) as an aware datetime; None if unreadable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ago(value: str | datetime | None, now: datetime | None = None) -> str:
    """'just now', '5 min ago', '3 h ago', '2 d ago' or a date; 'never' for None."""
    moment = parse_time(value)
    if moment is None:
        return "never"
    now = now or datetime.now(UTC)
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    if seconds < 7 * 86400:
        return f"{round(seconds / 86400)} d ago"
    return moment.astimezone().strftime("%Y-%m-%d")


def loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def one_line(text: str | None, limit: int = 60, empty: str = "Untitled") -> str:
    """Collapse whitespace (titles may hold newlines or tabs) and shorten to ``limit`` cells."""
    flat = " ".join((text or "").split())
    if not flat:
        return empty
    return flat if len(flat) <= limit else flat[: max(1, limit - 1)] + "…"


def literal(text: str, style: str = "") -> Content:
    """Untrusted text as Content: ``[`` and ``]`` stay characters, never markup or actions."""
    content = Content(text)
    return content.stylize(style) if style else content


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{100 * fraction:.0f}%"
