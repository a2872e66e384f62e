-- Live feed (issue 6): conflicts carry their writer's transaction id, like change rows, so the supervisor feed
-- cuts them at the same watermark as the change log (I2): a conflict committed late is never skipped, and the
-- feed reads it from the table instead of trusting a NOTIFY payload. Insert-only: resolving a conflict later
-- does not move it (unlike xmin).
ALTER TABLE conflicts ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX conflicts_department_xid_idx ON conflicts (department_id, xid);
