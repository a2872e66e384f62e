-- FieldSync initial schema: organisation, auth, tickets, change log (I2), exactly-once results (I1), audit (I9), conflicts (I5).

CREATE TABLE departments (
    id          smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE,                 -- stable slug, e.g. 'sanitation'
    name        text NOT NULL UNIQUE,
    agency_code text                                  -- MyLA311 owner code, e.g. 'BOS'
);

CREATE TABLE crews (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    department_id smallint NOT NULL REFERENCES departments(id),
    name          text NOT NULL UNIQUE,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crews_department_idx ON crews (department_id);

CREATE TABLE service_types (
    id            smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,               -- MyLA311 RequestType, e.g. 'Bulky Items'
    code          text NOT NULL UNIQUE,               -- Open311 service_code slug
    department_id smallint NOT NULL REFERENCES departments(id)
);

-- Supervisors and admins. Tokens are stored as SHA-256 of a >= 256-bit random secret.
CREATE TABLE users (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    role          text NOT NULL CHECK (role IN ('admin', 'supervisor')),
    department_id smallint REFERENCES departments(id),
    token_hash    bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK ((role = 'supervisor') = (department_id IS NOT NULL))
);

CREATE TABLE devices (
    id           text PRIMARY KEY,                    -- public device id, e.g. 'dev-7f3a9c21'
    crew_id      integer NOT NULL REFERENCES crews(id),
    label        text,
    token_hash   bytea NOT NULL UNIQUE,
    enrolled_at  timestamptz NOT NULL DEFAULT now(),
    enrolled_by  text,
    revoked_at   timestamptz,
    last_seen_at timestamptz,
    last_seq     bigint NOT NULL DEFAULT 0            -- highest mutation seq applied (I1); advanced in the push transaction
);
CREATE INDEX devices_crew_idx ON devices (crew_id);

CREATE TABLE tickets (
    id                uuid PRIMARY KEY,
    sr_number         text UNIQUE,
    service_type_id   smallint NOT NULL REFERENCES service_types(id),
    department_id     smallint NOT NULL REFERENCES departments(id),
    status            text NOT NULL,
    priority          text NOT NULL DEFAULT 'normal',
    address           text NOT NULL,
    zip               text,
    lat               double precision,
    lon               double precision,
    council_district  smallint,
    description       text NOT NULL DEFAULT '',
    source            text,
    requested_at      timestamptz NOT NULL,
    service_date      date,
    due_at            timestamptz,
    crew_id           integer REFERENCES crews(id),   -- assigned crew (kept on closed tickets for history)
    holder_crew_id    integer REFERENCES crews(id),   -- crew whose devices hold it now (I3); NULL when out of every crew's scope
    resolution_code   text,
    reason_code       text,
    duplicate_of      uuid REFERENCES tickets(id),
    created_by_device text REFERENCES devices(id),
    field_meta        jsonb NOT NULL DEFAULT '{}',    -- crew-owned scalar fields: who set them, when, at which version
    source_updated_at timestamptz,                    -- MyLA311 UpdatedDate, for idempotent re-import
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           integer NOT NULL DEFAULT 1,
    doc_hash          bytea                            -- SHA-256 of the canonical wire form (I4 checksum)
);
CREATE INDEX tickets_holder_idx ON tickets (holder_crew_id) WHERE holder_crew_id IS NOT NULL;
CREATE INDEX tickets_department_status_idx ON tickets (department_id, status);
CREATE INDEX tickets_department_updated_idx ON tickets (department_id, updated_at, id);
CREATE INDEX tickets_crew_idx ON tickets (crew_id);

-- Append-only children: deduplicated by their own ids, so retries and concurrent devices never conflict.
CREATE TABLE ticket_notes (
    id          uuid PRIMARY KEY,
    ticket_id   uuid NOT NULL REFERENCES tickets(id),
    text        text NOT NULL,
    author      text NOT NULL,
    device_time timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_notes_ticket_idx ON ticket_notes (ticket_id);

CREATE TABLE ticket_photos (
    ticket_id  uuid NOT NULL REFERENCES tickets(id),
    sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    kind       text NOT NULL CHECK (kind IN ('before', 'after')),
    taken_at   timestamptz NOT NULL,
    lat        double precision,
    lon        double precision,
    added_by   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, sha256, kind)
);
CREATE INDEX ticket_photos_sha_idx ON ticket_photos (sha256);

CREATE TABLE ticket_items (
    ticket_id uuid NOT NULL REFERENCES tickets(id),
    item_type text NOT NULL,
    count     integer NOT NULL CHECK (count BETWEEN 0 AND 999),
    PRIMARY KEY (ticket_id, item_type)
);

-- The change log devices and supervisors read. One row per committed change of a ticket, holding the whole
-- ticket document as of that change, so every page of a pull can be cut from one snapshot (I7) long after it
-- was taken. `xid` is the writer's transaction id: a pull returns rows committed between two pg_snapshots,
-- so a transaction that began early and committed late is never skipped (I2), unlike MAX(id) or a clock.
-- Rows of one ticket are ordered by id because every writer inserts its row while holding that ticket's lock.
CREATE TABLE changes (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ticket_id      uuid NOT NULL,
    department_id  smallint NOT NULL,
    holder_crew_id integer,                           -- crew holding the ticket after this change (NULL: none)
    prev_crew_id   integer,                           -- crew that lost the ticket in this change, if any
    removal_reason text,                              -- why prev_crew_id lost it (reassigned, cancelled, ...)
    version        integer NOT NULL,
    doc            jsonb NOT NULL,
    doc_hash       bytea NOT NULL,
    changed        text[] NOT NULL DEFAULT '{}',      -- fields touched, for the supervisor feed
    actor          text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_xid_idx ON changes (xid);
CREATE INDEX changes_holder_idx ON changes (holder_crew_id, xid) WHERE holder_crew_id IS NOT NULL;
CREATE INDEX changes_prev_idx ON changes (prev_crew_id, xid) WHERE prev_crew_id IS NOT NULL;
CREATE INDEX changes_department_idx ON changes (department_id, xid);
CREATE INDEX changes_ticket_idx ON changes (ticket_id, id);

-- Exactly-once push (I1): one row per (device, seq), written in the same transaction as the effect.
CREATE TABLE mutation_results (
    device_id      text NOT NULL REFERENCES devices(id),
    seq            bigint NOT NULL CHECK (seq >= 1),
    op             text NOT NULL,
    ticket_id      uuid,
    status         text NOT NULL CHECK (status IN ('applied', 'merged', 'rejected', 'duplicate')),
    reason         text,
    result         jsonb NOT NULL,                    -- the MutationResult sent back, minus the ticket document
    server_version bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, seq)
);

-- Audit (I9): every supervisor action and every field mutation, with before/after, in the action's transaction.
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor_kind text NOT NULL CHECK (actor_kind IN ('admin', 'supervisor', 'device', 'system', 'import')),
    actor      text NOT NULL,
    action     text NOT NULL,
    ticket_id  uuid,
    department_id smallint,
    before     jsonb,
    after      jsonb,
    reason     text,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX audit_ticket_idx ON audit_log (ticket_id, id);
CREATE INDEX audit_department_idx ON audit_log (department_id, id);

-- Conflicts and late field reports (I5): surfaced to supervisors, resolvable, never silently dropped.
CREATE TABLE conflicts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id     uuid NOT NULL REFERENCES tickets(id),
    department_id smallint NOT NULL REFERENCES departments(id),
    crew_id       integer REFERENCES crews(id),
    device_id     text REFERENCES devices(id),
    seq           bigint,
    kind          text NOT NULL,                      -- field_conflict | late_field_report | stale_transition | ...
    field         text,
    kept          jsonb,
    discarded     jsonb,
    detail        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    resolved_by   text,
    resolution    text
);
CREATE INDEX conflicts_department_idx ON conflicts (department_id, resolved_at, id);
CREATE INDEX conflicts_ticket_idx ON conflicts (ticket_id);

-- Photo blobs by content hash (I8). A row exists only once the bytes are complete and verified.
CREATE TABLE blobs (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size        bigint NOT NULL,
    media_type  text NOT NULL,
    width       integer,
    height      integer,
    verified_at timestamptz NOT NULL DEFAULT now()
);
