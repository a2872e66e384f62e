-- Ticket wire documents are rendered by PostgreSQL in one statement (storage/tickets.py). Timestamps must be
-- byte-identical to the protocol's canonical form (protocol/fields.format_datetime): UTC, microseconds, 'Z'.
CREATE FUNCTION fs_ts(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
