"""Where the evaluation data lives: MSC personas and a LoCoMo file.

Neither ships with the package (LoCoMo is CC BY-NC). They are looked up, in order, in the path
given on the command line, in ``$LPM_EVAL_DATA``, and in the development layout next to the
repository (``../shared/data/locomo``); a missing file is a one-line error saying which option
to pass.
"""

from __future__ import annotations

import os
from pathlib import Path

from lpm_local.errors import NotFound

ENV_DATA = "LPM_EVAL_DATA"
PERSONAS_FILE = "msc_personas_all.json"
LOCOMO_FILES = ("locomo10.json", "locomo_dev.json")


def data_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(ENV_DATA):
        dirs.append(Path(os.environ[ENV_DATA]).expanduser())
    dirs.append(Path(__file__).resolve().parents[4] / "shared" / "data" / "locomo")
    return dirs


def _find(given: str | None, names: tuple[str, ...], option: str) -> Path:
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise NotFound(f"{path}: no such file (given with {option})")
        return path
    for folder in data_dirs():
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise NotFound(
        f"cannot find {' or '.join(names)}: pass {option} PATH or set {ENV_DATA} to its folder"
    )


def personas_file(given: str | None = None) -> Path:
    return _find(given, (PERSONAS_FILE,), "--personas")


def locomo_file(given: str | None = None) -> Path:
    return _find(given, LOCOMO_FILES, "--locomo")


def personas(given: str | None = None) -> dict:
    """MSC persona sentences per split (``lpm_local.research.synthetic.load_msc_personas``)."""
    from lpm_local.errors import BadInput
    from lpm_local.research.synthetic import load_msc_personas

    path = personas_file(given)
    try:
        return load_msc_personas(path)
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise BadInput(f"not an MSC personas file: {exc}", where=str(path)) from None
