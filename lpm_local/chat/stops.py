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
        keep = self._partial_tail(text)
        first = self._first_hit(text)
        # A stop found here ends the reply, unless a longer stop that starts before it may still
        # be completing in the held tail (":\n" of ":\n:" before the stop "\n"): then wait.
        if first is not None and len(text) - keep >= first:
            self.stopped = True
            self._held = ""
            return text[:first], True
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back tail once the stream has ended (cut at a stop string it holds; then
        ``stopped`` is True)."""
        held, self._held = self._held, ""
        if self.stopped:
            return ""
        first = self._first_hit(held)
        if first is not None:
            self.stopped = True
            return held[:first]
        return held

    def _first_hit(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def _partial_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
