"""What `lpm memory status` reads about refits, without the refit machinery.

The refit itself needs torch; reading its log (the ``refits.detail`` JSON) and the cadence the
app refits at does not, and `lpm memory status` should answer in well under a second. So these
two live here, and ``refit`` and ``runtime`` import them from here.
"""

from __future__ import annotations

import json

DEFAULT_REFIT_EVERY = 8  # user turns between automatic refits


def parse_detail(detail: str | None) -> dict:
    """The JSON a refit wrote into ``refits.detail`` ({} for rows written otherwise)."""
    try:
        value = json.loads(detail or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}
