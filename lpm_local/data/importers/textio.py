"""Decoding an untrusted byte stream to text, one chunk at a time.

Policy, the same for every text format (JSON, JSONL, Markdown, plain text): UTF-8, with or
without a BOM; UTF-16 (LE or BE) only with its BOM, as Windows tools write it; everything else
refused with the byte offset of the first bad byte. Nothing is silently replaced at this level:
a file that is not valid text is not a chat log we should learn from.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import BinaryIO

from lpm_local.errors import BadInput

CHUNK_BYTES = 1 << 20  # 1 MiB: big enough to amortise Python overhead, small against memory caps
_ENCODING_HINT = "save the file as UTF-8 and import it again"

Progress = Callable[[int, int], None]


class TextReader:
    """Yields decoded chunks of ``raw`` and counts the bytes consumed (for progress and errors)."""

    def __init__(
        self,
        raw: BinaryIO,
        name: str,
        *,
        total_bytes: int = 0,
        progress: Progress | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ):
        self.name = name
        self._raw = raw
        self._total = total_bytes
        self._progress = progress
        self._chunk_bytes = chunk_bytes
        self.bytes_read = 0
        first = raw.read(chunk_bytes)
        self.bytes_read = len(first)
        self.encoding, bom = _sniff_encoding(first, name)
        self._offset = bom  # byte offset of the next byte given to the decoder
        self._decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        self._pending: bytes | None = first[bom:]
        self._done = False

    def read_chunk(self) -> str:
        """The next piece of text, or '' once the stream is exhausted."""
        while not self._done:
            if self._pending is not None:
                data, self._pending = self._pending, None
            else:
                try:
                    data = self._raw.read(self._chunk_bytes)
                except OSError as exc:  # a disk error, or a file truncated under our feet
                    raise BadInput(
                        f"cannot read ({exc.strerror or exc})", where=self.name
                    ) from None
                self.bytes_read += len(data)
            final = not data
            text = self._decode(data, final)
            if self._progress is not None:
                self._progress(self.bytes_read, self._total)
            if final:
                self._done = True
            if text:
                return text
        return ""

    def _decode(self, data: bytes, final: bool) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            at = self._offset + max(exc.start, 0)
            what = "UTF-16" if self.encoding.startswith("utf-16") else "UTF-8"
            raise BadInput(
                f"invalid {what} at byte {at:,}", where=self.name, hint=_ENCODING_HINT
            ) from None
        self._offset += len(data)
        return text


def _sniff_encoding(head: bytes, name: str) -> tuple[str, int]:
    """(codec, BOM length) from the first bytes."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise BadInput("UTF-32 text is not supported", where=name, hint=_ENCODING_HINT)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le", 2
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be", 2
    if b"\x00" in head[:4]:
        # UTF-16/32 without a BOM, or a binary file: guessing would produce garbage text.
        raise BadInput(
            "binary data or UTF-16 without a byte-order mark", where=name, hint=_ENCODING_HINT
        )
    return "utf-8", 0


def read_text_head(raw: BinaryIO, name: str, max_bytes: int) -> str:
    """Up to ``max_bytes`` decoded (a truncated trailing character is dropped), for sniffing."""
    data = raw.read(max_bytes)
    encoding, bom = _sniff_encoding(data, name)
    try:
        return codecs.getincrementaldecoder(encoding)(errors="strict").decode(data[bom:], False)
    except UnicodeDecodeError as exc:
        what = "UTF-16" if encoding.startswith("utf-16") else "UTF-8"
        raise BadInput(
            f"invalid {what} at byte {bom + exc.start:,}", where=name, hint=_ENCODING_HINT
        ) from None
