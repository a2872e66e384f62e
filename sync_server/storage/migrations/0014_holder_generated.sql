-- The holder rule (I3) in one place: which crew's devices hold a ticket follows from its status and crew alone, so
-- PostgreSQL computes it and no writer sets it (or can get it wrong). The statuses are protocol's HELD_STATUSES
-- (SPEC §2, sync_server/domain/states.holder); tests/test_holder_rule.py pins this expression to both, status by
-- status. Every writer already stored exactly this value, so recomputing it changes no row's holder.
-- Dropping the column drops its index and foreign key with it; both are recreated below (a function body that
-- names the column, fs_photo_possessed, is plain SQL text and resolves it again at call time).
ALTER TABLE tickets DROP COLUMN holder_crew_id;
ALTER TABLE tickets ADD COLUMN holder_crew_id integer REFERENCES crews(id) GENERATED ALWAYS AS (
    CASE WHEN status IN ('assigned', 'acknowledged', 'in_progress', 'paused', 'reopened',
                         'completed', 'unable_to_complete')
         THEN crew_id END) STORED;
CREATE INDEX tickets_holder_idx ON tickets (holder_crew_id) WHERE holder_crew_id IS NOT NULL;
