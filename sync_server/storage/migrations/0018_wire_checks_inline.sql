-- The wire-datetime CHECKs of migration 0008, same names and same conditions, written out instead of calling
-- fs_wire_ts_ok / fs_wire_date_ok. PostgreSQL prepares a table's CHECK expressions on every statement that writes it,
-- and a SQL function in one is inlined anew each time (catalog lookups, its stored body read back): for the push
-- statement, which updates tickets and may insert notes and photos, that was ~5 % of PostgreSQL's CPU in a
-- one-mutation push. The functions stay (same rule, for ad-hoc SQL); tests/test_sync_edges.py still shows each CHECK
-- refusing ±infinity and times outside 1970..2100.
ALTER TABLE tickets
    DROP CONSTRAINT tickets_requested_at_wire,
    DROP CONSTRAINT tickets_due_at_wire,
    DROP CONSTRAINT tickets_service_date_wire,
    DROP CONSTRAINT tickets_updated_at_wire,
    DROP CONSTRAINT tickets_source_updated_at_wire,
    ADD CONSTRAINT tickets_requested_at_wire CHECK (isfinite(requested_at)
        AND requested_at >= '1970-01-01 00:00:00+00' AND requested_at < '2100-01-01 00:00:00+00'),
    ADD CONSTRAINT tickets_due_at_wire CHECK (due_at IS NULL OR (isfinite(due_at)
        AND due_at >= '1970-01-01 00:00:00+00' AND due_at < '2100-01-01 00:00:00+00')),
    ADD CONSTRAINT tickets_service_date_wire CHECK (service_date IS NULL OR (isfinite(service_date)
        AND service_date >= DATE '1970-01-01' AND service_date < DATE '2100-01-01')),
    ADD CONSTRAINT tickets_updated_at_wire CHECK (isfinite(updated_at)
        AND updated_at >= '1970-01-01 00:00:00+00' AND updated_at < '2100-01-01 00:00:00+00'),
    ADD CONSTRAINT tickets_source_updated_at_wire CHECK (source_updated_at IS NULL OR (isfinite(source_updated_at)
        AND source_updated_at >= '1970-01-01 00:00:00+00' AND source_updated_at < '2100-01-01 00:00:00+00'));
ALTER TABLE ticket_notes
    DROP CONSTRAINT ticket_notes_device_time_wire,
    DROP CONSTRAINT ticket_notes_created_at_wire,
    ADD CONSTRAINT ticket_notes_device_time_wire CHECK (device_time IS NULL OR (isfinite(device_time)
        AND device_time >= '1970-01-01 00:00:00+00' AND device_time < '2100-01-01 00:00:00+00')),
    ADD CONSTRAINT ticket_notes_created_at_wire CHECK (isfinite(created_at)
        AND created_at >= '1970-01-01 00:00:00+00' AND created_at < '2100-01-01 00:00:00+00');
ALTER TABLE ticket_photos
    DROP CONSTRAINT ticket_photos_taken_at_wire,
    ADD CONSTRAINT ticket_photos_taken_at_wire CHECK (isfinite(taken_at)
        AND taken_at >= '1970-01-01 00:00:00+00' AND taken_at < '2100-01-01 00:00:00+00');
