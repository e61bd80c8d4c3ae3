"""Statement analysis, pure: SQL text in, facts out (PostgreSQL's own grammar via pglast)."""
