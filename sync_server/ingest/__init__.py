"""MyLA311 CSV import: pure parsing and mapping (parse, mapping), set-based upsert (upsert), streaming driver (importer)."""
