"""Storage: the SQLite database, its schema and its queries."""
