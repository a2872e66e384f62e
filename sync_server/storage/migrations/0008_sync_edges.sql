-- Sync-path hardening: wire datetimes always finite and in range, push results remembered with a digest of the
-- mutation they answer (so a reused seq is caught), and crew holding history that retention never prunes.

-- Wire datetimes live in [1970-01-01, 2100-01-01) UTC (protocol/fields.py DATETIME_MIN/MAX). asyncpg stores
-- Python's datetime.min/max as -infinity/infinity, which fs_ts() renders as NULL where the schema says datetime:
-- the CHECKs below make such a row impossible, whoever writes it.
CREATE FUNCTION fs_wire_ts_ok(ts timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN isfinite(ts) AND ts >= '1970-01-01 00:00:00+00' AND ts < '2100-01-01 00:00:00+00';

CREATE FUNCTION fs_wire_date_ok(d date) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN isfinite(d) AND d >= DATE '1970-01-01' AND d < DATE '2100-01-01';

-- Repair rows written before the range existed (they answered 500 on every read). Optional times become NULL;
-- required ones fall back to when the server recorded the row. The change log keeps its old documents until the
-- ticket next changes; the supervisor API renders the repaired row at once.
UPDATE tickets SET due_at = NULL WHERE due_at IS NOT NULL AND NOT fs_wire_ts_ok(due_at);
UPDATE tickets SET service_date = NULL WHERE service_date IS NOT NULL AND NOT fs_wire_date_ok(service_date);
UPDATE tickets SET requested_at = created_at WHERE NOT fs_wire_ts_ok(requested_at);
UPDATE tickets SET source_updated_at = NULL WHERE source_updated_at IS NOT NULL AND NOT fs_wire_ts_ok(source_updated_at);
UPDATE ticket_notes SET device_time = NULL WHERE device_time IS NOT NULL AND NOT fs_wire_ts_ok(device_time);
UPDATE ticket_photos SET taken_at = created_at WHERE NOT fs_wire_ts_ok(taken_at);

ALTER TABLE tickets
    ADD CONSTRAINT tickets_requested_at_wire CHECK (fs_wire_ts_ok(requested_at)),
    ADD CONSTRAINT tickets_due_at_wire CHECK (due_at IS NULL OR fs_wire_ts_ok(due_at)),
    ADD CONSTRAINT tickets_service_date_wire CHECK (service_date IS NULL OR fs_wire_date_ok(service_date)),
    ADD CONSTRAINT tickets_updated_at_wire CHECK (fs_wire_ts_ok(updated_at)),
    ADD CONSTRAINT tickets_source_updated_at_wire CHECK (source_updated_at IS NULL OR fs_wire_ts_ok(source_updated_at));
ALTER TABLE ticket_notes
    ADD CONSTRAINT ticket_notes_device_time_wire CHECK (device_time IS NULL OR fs_wire_ts_ok(device_time)),
    ADD CONSTRAINT ticket_notes_created_at_wire CHECK (fs_wire_ts_ok(created_at));
ALTER TABLE ticket_photos
    ADD CONSTRAINT ticket_photos_taken_at_wire CHECK (fs_wire_ts_ok(taken_at));

-- A push result is stored as the exact JSON first sent (text, not jsonb: jsonb would reorder keys, and a replay must
-- be byte-identical), with the SHA-256 of the mutation's canonical form (protocol/canonical.py mutation_digest).
-- Rows from before this migration have no digest: their replays are answered as before, unchecked.
ALTER TABLE mutation_results ALTER COLUMN result TYPE text USING result::text;
ALTER TABLE mutation_results ADD COLUMN digest bytea;

-- Every crew that ever held a ticket (I5: its late field work is kept, not refused). State, not stream: retention
-- prunes the change log but never this table. Maintained with every change-log row (storage/tickets.py
-- record_changes), in the same transaction; back-filled here from what the log still has.
CREATE TABLE ticket_holders (
    ticket_id     uuid NOT NULL,
    crew_id       integer NOT NULL REFERENCES crews(id),
    first_held_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, crew_id)
);
INSERT INTO ticket_holders (ticket_id, crew_id, first_held_at)
SELECT ticket_id, crew_id, min(created_at)
FROM (SELECT ticket_id, holder_crew_id AS crew_id, created_at FROM changes WHERE holder_crew_id IS NOT NULL
      UNION ALL
      SELECT ticket_id, prev_crew_id, created_at FROM changes WHERE prev_crew_id IS NOT NULL
      UNION ALL
      SELECT id, holder_crew_id, updated_at FROM tickets WHERE holder_crew_id IS NOT NULL) AS h
GROUP BY ticket_id, crew_id;
