"""Stop strings over streamed text: however the text is split into chunks, the output is the
text before the first stop string, and nothing is held back once the stream ends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lpm_local.chat.stops import StopScanner


def _run(stops, chunks) -> tuple[str, bool]:
    scanner, out = StopScanner(stops), []
    for chunk in chunks:
        shown, stopped = scanner.feed(chunk)
        out.append(shown)
        if stopped:
            return "".join(out), True
    tail = scanner.flush()
    return "".join(out) + tail, scanner.stopped


def _expected(stops, text) -> tuple[str, bool]:
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


@given(
    text=st.text(alphabet="abc:\n", max_size=40),
    stops=st.lists(st.text(alphabet="abc:\n", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=8),
)
def test_any_chunking_gives_the_text_before_the_first_stop(text, stops, cuts):
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    chunks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    assert _run(stops, chunks) == _expected(stops, text)


def test_a_stop_split_across_chunks_is_held_back_then_dropped():
    scanner = StopScanner(["Observer:"])
    assert scanner.feed("Hello Obs") == ("Hello ", False)
    assert scanner.feed("erver: more") == ("", True)
    assert scanner.flush() == ""


def test_a_longer_stop_that_starts_earlier_wins_over_one_inside_it():
    # Found by the property above: the stop "\n" arrives inside ":\n:", which starts earlier.
    scanner = StopScanner(["\n", ":\n:"])
    assert scanner.feed(":\n") == ("", False)
    assert scanner.feed(":") == ("", True)
    scanner = StopScanner(["\n", ":\n:"])
    assert scanner.feed(":\n") == ("", False)
    assert scanner.flush() == ":" and scanner.stopped  # the stream ended: "\n" was the stop


def test_a_false_start_is_released():
    scanner = StopScanner(["###"])
    assert scanner.feed("a ##") == ("a ", False)
    assert scanner.feed(" b") == ("## b", False)
    assert scanner.flush() == ""
