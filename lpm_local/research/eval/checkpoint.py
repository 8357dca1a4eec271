"""Resuming an interrupted ``lpm eval``: a JSONL checkpoint of every result as it lands.

``eval-checkpoint.jsonl`` in the output folder holds, one JSON object a line:

- a ``header``: the sha256 of everything that decides the results (backbone, the benchmarks'
  content, the methods asked for, the configuration, users, seed) and those settings themselves;
- ``tuning``: the learning-rate search's outcome, when one ran (so a resume does not redo it);
- ``methods``: what each built method describes itself as (learning rates, projector sha256...):
  a projector retrained between two runs must not mix with the first run's rows either;
- ``question`` and ``fit`` rows, exactly the runner's records, appended (flushed and fsynced) as
  each question's result lands and as each fit's group completes.

A rerun with the same settings reads the file and skips every (benchmark, case, method,
question) already there, so its report equals an uninterrupted run's (timings aside). A rerun
with other settings refuses, in one line, to mix the two (``--fresh`` starts over). A last line
torn by a kill is dropped. The file is private (0600): it holds the histories' answers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lpm_local.errors import BadInput

FILENAME = "eval-checkpoint.jsonl"
VERSION = 1


def canonical(value) -> object:
    """``value`` as JSON gives it back (tuples become lists): what is stored is what compares."""
    return json.loads(json.dumps(value, default=_default, sort_keys=True))


def digest(value) -> str:
    text = json.dumps(value, default=_default, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _default(value):
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def question_key(row: dict) -> tuple:
    return (row["benchmark"], row["case"], row["method"], row["qid"])


def group_key(row: dict) -> tuple:
    return (row["benchmark"], row["case"], row["cutoff"], row["method"])


class Checkpoint:
    """The results already done for one set of settings, and where new ones are appended.

    ``path=None`` keeps nothing (a run without an output folder)."""

    def __init__(self, path: str | Path | None, settings: dict, *, fresh: bool = False):
        self.path = None if path is None else Path(path)
        self.settings = canonical(settings)
        self.sha256 = digest(self.settings)
        self.questions: dict[tuple, dict] = {}
        self.fits: dict[tuple, dict] = {}
        self.tuning: dict | None = None
        self.methods: list | None = None
        self.resumed = 0
        if self.path is None:
            return
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._read()
        else:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._append(
                {
                    "kind": "header",
                    "version": VERSION,
                    "sha256": self.sha256,
                    "settings": self.settings,
                }
            )

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> None:
        assert self.path is not None
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        good = 0  # bytes of whole, parseable lines
        rows = []
        for line in lines:
            if not line.strip():
                good += len(line) + 1
                continue
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break  # a line torn by a kill: it and anything after it is redone
            good += len(line) + 1
        if not rows or rows[0].get("kind") != "header":
            raise BadInput(
                "not an lpm eval checkpoint",
                where=str(self.path),
                hint="remove it or rerun with --fresh",
            )
        header = rows[0]
        if header.get("sha256") != self.sha256:
            changed = _differences(header.get("settings") or {}, self.settings)
            raise BadInput(
                f"holds results of other settings ({', '.join(changed) or 'version'}); "
                "rerun with --fresh to start over, or choose another --out",
                where=str(self.path),
            )
        if good < len(raw):
            with open(self.path, "r+b") as handle:
                handle.truncate(min(good, len(raw)))
        for row in rows[1:]:
            kind = row.get("kind")
            if kind == "question":
                self.questions[question_key(row)] = row
            elif kind == "fit":
                self.fits[group_key(row)] = row
            elif kind == "tuning":
                self.tuning = row["tuning"]
            elif kind == "methods":
                self.methods = row["methods"]

    # -- writing ---------------------------------------------------------------------------

    def _append(self, row: dict) -> None:
        if self.path is None:
            return
        line = (json.dumps(row, default=_default) + "\n").encode("utf-8", "surrogatepass")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)  # a result that was reported done survives a power cut
        finally:
            os.close(fd)

    def add(self, row: dict) -> None:
        """Record one question or fit row (the runner's record, tagged with its group)."""
        self._append(row)
        if row["kind"] == "question":
            self.questions[question_key(row)] = canonical(row)
        elif row["kind"] == "fit":
            self.fits[group_key(row)] = canonical(row)

    def keep_tuning(self, tuning: dict) -> None:
        self.tuning = canonical(tuning)
        self._append({"kind": "tuning", "tuning": tuning})

    def check_methods(self, described: list) -> None:
        """Refuse to resume with methods that describe themselves otherwise than the ones that
        produced the stored rows (another projector, another learning rate)."""
        described = canonical(described)
        if self.methods is None:
            self.methods = described
            self._append({"kind": "methods", "methods": described})
            return
        if self.methods != described:
            names = [
                d.get("name", "?")
                for d, old in zip(described, self.methods + [None] * len(described))
                if d != old
            ]
            raise BadInput(
                f"holds results of methods set up otherwise ({', '.join(names) or 'the list'}: "
                "projector, learning rate or steps); rerun with --fresh to start over, "
                "or choose another --out",
                where=str(self.path),
            )

    def question(self, key: tuple) -> dict | None:
        row = self.questions.get(key)
        if row is not None:
            self.resumed += 1
        return row


def _differences(old: dict, new: dict) -> list[str]:
    """Top-level settings (and the configuration's fields) that differ."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out
