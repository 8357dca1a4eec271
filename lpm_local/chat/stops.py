"""Stop sequences over streamed text: emit everything before the first stop string, nothing after.

A stop string can arrive split across chunks ("Obs" + "erver:"), so the scanner holds back the
longest tail of the text seen so far that could still grow into a stop string, and releases it
once the next chunk shows it does not. The reply that is shown and the reply that is stored are
the same text: everything before the stop, never the stop itself.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Feed chunks in order; ``feed`` returns the text that is safe to show and whether a stop
    string was reached (after which nothing more should be fed)."""

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, chunk: str) -> tuple[str, bool]:
        """(text to emit now, True if a stop string ended the reply)."""
        if self.stopped:
            return "", True
        if not self.stops:
            return chunk, False
        text = self._held + chunk
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)], True
        keep = self._partial_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back tail once the stream has ended without reaching a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
