-- Bounded growth (issue 17): an index for every prune predicate, so the retention job reads what it deletes and not
-- the whole table (plans: ops/bench/explain_prune.py).
--
-- Stored push results are deleted oldest first, about in the order they were inserted: a BRIN index on created_at
-- costs the push path almost nothing and finds the old block ranges. The change log and the audit log need none:
-- their ids follow insert order, so the pruner and the archive walk the old end of the primary key
-- (storage/retention.py); a time index there would cost every push an index insert.
CREATE INDEX mutation_results_created_brin ON mutation_results USING brin (created_at);

-- Blob collection asks "does any upload session still name this hash" for every candidate.
CREATE INDEX upload_sessions_sha_idx ON upload_sessions (sha256);

-- Unreferenced photos are collected once they are older than a grace period.
CREATE INDEX blobs_verified_idx ON blobs (verified_at, sha256);

-- Collecting a photo's row takes its possession records with it.
ALTER TABLE photo_possession DROP CONSTRAINT photo_possession_sha256_fkey,
    ADD CONSTRAINT photo_possession_sha256_fkey FOREIGN KEY (sha256) REFERENCES blobs(sha256) ON DELETE CASCADE;

-- When each maintenance job last started and finished, and what it did: N server processes claim a job here so it
-- runs once per interval, and operators read it to see that retention keeps up.
CREATE TABLE maintenance_runs (
    job         text PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    report      jsonb
);
