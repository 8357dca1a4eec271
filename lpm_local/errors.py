"""Errors a user can act on.

Every ``LpmError`` carries a message written for the person at the terminal: what went wrong,
where, and what to do. The CLI prints it as one line and exits 2; the TUI shows it in a toast.
Anything that is not an ``LpmError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import unicodedata

# Control (Cc), format (Cf: bidi overrides, zero-width), surrogate (Cs) and line/paragraph
# separator characters: a terminal acts on some of them (ESC starts a sequence that can recolour,
# retitle or clear it) and the others hide or reorder what is shown.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def visible(text: str) -> str:
    """``text`` with every control or invisible character shown as an escape (``\\x1b``,
    ``\\u202e``), so an untrusted name (a file name, a title) prints as what it is and can
    never drive the terminal. Printable text, non-ASCII included, is left as it is."""
    if text.isprintable():
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _INVISIBLE else c
        for c in text
    )


class LpmError(Exception):
    """Base class: a failure the user can act on, reported as one line."""


class CorruptDatabase(LpmError):
    """The database file failed ``PRAGMA quick_check``; it is left untouched."""


class BadPath(LpmError):
    """A path of the app that cannot be used as it is (``LPM_HOME=/dev/null``, a directory
    where the database should be, ...); nothing at it was changed."""


class AlreadyRunning(LpmError):
    """Another interactive instance holds this data dir (two would show diverging views)."""


class ModelNotAvailable(LpmError):
    """The requested backbone cannot be loaded here (no weights, no package, no CUDA...)."""


class BadInput(LpmError):
    """Input from a file or the user that cannot be accepted.

    ``where`` names the file and the place inside it (e.g. ``conversations.json: item 3,
    mapping.ab12.message.content``) so the message can say exactly where to look.
    """

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        self.what, self.where, self.hint = what, where, hint
        parts = [f"{where}: {what}" if where else what]
        if hint:
            parts.append(hint)
        super().__init__(". ".join(parts))


class BadBundle(BadInput):
    """A memory bundle (.lpm) or tensor blob that is refused: damaged, hostile, or not ours."""


class NotFound(LpmError):
    """A named profile, conversation or memory version does not exist."""
