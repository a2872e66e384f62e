-- Resumable photo uploads (tus 1.0, I8). The bytes of an unfinished upload live in a partial file named by the
-- session id; this row is the truth about how many of them are acknowledged (upload_offset). A PATCH claims the
-- session with a short lease so two requests never write one file at once, and a crashed writer's claim expires.

CREATE TABLE upload_sessions (
    id            text PRIMARY KEY,                   -- random, unguessable: it is the tus upload URL
    device_id     text NOT NULL REFERENCES devices(id),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    ticket_id     uuid NOT NULL REFERENCES tickets(id),
    kind          text NOT NULL CHECK (kind IN ('before', 'after')),
    taken_at      timestamptz NOT NULL,
    lat           double precision,
    lon           double precision,
    filename      text,
    length        bigint NOT NULL CHECK (length >= 0),
    upload_offset bigint NOT NULL DEFAULT 0 CHECK (upload_offset >= 0 AND upload_offset <= length),
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'complete', 'expired')),
    lease_token   text,                               -- set while one PATCH streams into the partial file
    lease_until   timestamptz,
    metadata      text,                               -- the Upload-Metadata header as sent, echoed on HEAD
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
-- Concurrent-session limit per device and the expiry sweep both look only at open sessions.
CREATE INDEX upload_sessions_device_open_idx ON upload_sessions (device_id) WHERE state = 'open';
CREATE INDEX upload_sessions_expires_idx ON upload_sessions (expires_at);

-- Who first delivered a blob, for the evidence trail of an original.
ALTER TABLE blobs ADD COLUMN uploaded_by text;
