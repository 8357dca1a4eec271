"""Chat-log importers: pure, streaming parsers from other apps' exports to one record stream.

``parse_file(path)`` detects the format from the content and returns a ``ParsedFile`` whose
``conversations`` are yielded lazily; ``lpm_local.data.importing`` writes them in one transaction.
Nothing here touches the store, the network or the user's files (databases are opened
read-only). Every refusal is a ``BadInput`` naming the file and the place in it.
"""

from .base import (
    DEFAULT_LIMITS,
    ImportedConversation,
    ImportedMessage,
    ImportLimits,
    ParseContext,
    ParsedFile,
)
from .detect import BUNDLE_FORMAT, SUPPORTED_FORMATS, detect_format, parse_file

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_LIMITS",
    "SUPPORTED_FORMATS",
    "ImportLimits",
    "ImportedConversation",
    "ImportedMessage",
    "ParseContext",
    "ParsedFile",
    "detect_format",
    "parse_file",
]
