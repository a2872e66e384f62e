-- Open311 GeoReport v2 (issue 14): what the city's 311 channels may post and read.
--
-- Service types carry their public face: a description, keywords and group for GET services, the attributes of
-- their service definition, and the public status note shown for each resolution/reason code (crew-internal
-- notes are never shown to residents). The defaults are the texts for the codes migration 0005 seeds.

ALTER TABLE service_types ADD COLUMN open311_description text;
ALTER TABLE service_types ADD COLUMN open311_group text;
ALTER TABLE service_types ADD COLUMN open311_keywords text[] NOT NULL DEFAULT '{}';
ALTER TABLE service_types ADD COLUMN open311_attributes jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(open311_attributes) = 'array');
ALTER TABLE service_types ADD COLUMN status_notes jsonb NOT NULL DEFAULT '{
  "collected": "Items collected.", "cleaned": "Area cleaned.", "removed": "Removed.",
  "painted_over": "Graffiti painted over.", "pressure_washed": "Graffiti pressure washed.",
  "patched": "Patched.", "filled": "Filled.", "repaired": "Repaired.", "relamped": "Lamp replaced.",
  "photocell_replaced": "Light sensor replaced.", "circuit_repaired": "Circuit repaired.",
  "resolved": "Resolved.", "partial": "Partly resolved; a follow-up may be needed.",
  "not_found": "Crew found nothing at the location.",
  "no_access": "Crew could not access the location.", "items_not_out": "Items were not out for collection.",
  "blocked": "Location was blocked.", "unsafe": "Work could not be done safely; it will be rescheduled.",
  "occupied": "Location was occupied.", "private_property": "Location is private property.",
  "hazmat_referral": "Referred to hazardous materials team.", "utility_cut": "Referred to the utility.",
  "pole_down_referral": "Referred for pole replacement.", "edison_referral": "Referred to the power company.",
  "wrong_area": "Referred to the crew for this area.", "referred_out": "Referred to another agency."
}'::jsonb CHECK (jsonb_typeof(status_notes) = 'object');

-- What a POSTed request brought with it that is not part of the crew's ticket: the resident's contact data (staff
-- only, never in GET requests), media_url, the attribute answers, the token, and the API key that created it
-- (the key's audit trail). One row per ticket created through Open311.
CREATE TABLE open311_requests (
    ticket_id   uuid PRIMARY KEY REFERENCES tickets(id),
    token       text NOT NULL UNIQUE,
    api_key_id  integer,
    reporter    jsonb NOT NULL DEFAULT '{}',
    media_url   text,
    attributes  jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys for POST requests. Only the SHA-256 is stored (the key is shown once); revoked keys stay for the trail.
CREATE TABLE api_keys (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    key_hash        bytea NOT NULL UNIQUE,
    rate_per_minute integer NOT NULL CHECK (rate_per_minute BETWEEN 1 AND 100000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL,
    revoked_at      timestamptz
);
ALTER TABLE open311_requests ADD FOREIGN KEY (api_key_id) REFERENCES api_keys(id);
CREATE INDEX open311_requests_key_idx ON open311_requests (api_key_id, created_at);

-- Fixed one-minute windows per key, counted with INSERT ... ON CONFLICT DO UPDATE ... RETURNING: one atomic
-- statement, so every server process shares the same count without a read-modify-write race.
CREATE TABLE api_key_usage (
    api_key_id integer NOT NULL REFERENCES api_keys(id),
    minute     timestamptz NOT NULL,
    hits       integer NOT NULL,
    PRIMARY KEY (api_key_id, minute)
);

-- New service request numbers (sr_number) come from this sequence through the city's format setting.
CREATE SEQUENCE open311_sr_seq;

-- Dispatch rules (data, evaluated by sync_server/domain/dispatch.py): the first rule by position whose service
-- type (NULL: any) and area (at most one of district, ZIP, polygon, city routing area; none: anywhere) match
-- routes a new request to its crew. No match leaves the ticket unassigned.
CREATE TABLE dispatch_rules (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position         integer NOT NULL,
    service_type_id  smallint REFERENCES service_types(id),
    council_district smallint,
    zip              text,
    polygon          jsonb,                          -- [[lon, lat], ...], at least three points
    routing_area     text,                           -- the city's routing area (MyLA311 AssignTo), for imports
    crew_id          integer NOT NULL REFERENCES crews(id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text NOT NULL,
    CHECK (num_nonnulls(council_district, zip, polygon, routing_area) <= 1)
);
CREATE INDEX dispatch_rules_position_idx ON dispatch_rules (position, id);

-- The mirror of an upstream Open311 server: how far it has read (resumable after a crash) and which upstream
-- request became which ticket (idempotent by service_request_id).
CREATE TABLE open311_mirror_state (
    endpoint      text PRIMARY KEY,
    updated_after timestamptz,                       -- everything updated before this is mirrored
    runs          bigint NOT NULL DEFAULT 0,
    last_run_at   timestamptz
);
CREATE TABLE open311_mirror_items (
    endpoint           text NOT NULL,
    service_request_id text NOT NULL,
    ticket_id          uuid NOT NULL REFERENCES tickets(id),
    upstream_status    text NOT NULL,
    upstream_updated   timestamptz,
    PRIMARY KEY (endpoint, service_request_id)
);

-- API keys and the mirror act in the audit trail under their own kinds.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_actor_kind_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_kind_check
    CHECK (actor_kind IN ('admin', 'supervisor', 'device', 'system', 'import', 'api_key', 'mirror'));

-- GET requests filters by requested time and pages by it.
CREATE INDEX tickets_requested_idx ON tickets (requested_at, id);
CREATE INDEX tickets_updated_idx ON tickets (updated_at, id);
