"""``.lpm`` memory bundles: the format, the reader and export/import."""
