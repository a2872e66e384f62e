-- Organisation management (issue 15): crews get a display name and a retirement time, service types carry their
-- default priority and the resolution and reason codes a crew may use with them. The codes are data in this table
-- (not constants in code) so an operator can add a service type with its own codes without a release; the column
-- defaults are the codes the field apps, the importer and the simulator use today, so every existing and every
-- newly created service type accepts them unless its creator lists others. /v1/catalog serves these lists and the
-- push engine refuses a `complete`, `set_resolution`, `self_report`, `unable_to_complete` or `decline` whose code
-- is not in its ticket's service type (per mutation, invalid_args: never a poison pill, I6).

ALTER TABLE crews ADD COLUMN display_name text;
ALTER TABLE crews ADD COLUMN retired_at timestamptz;

ALTER TABLE departments ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE service_types ADD COLUMN default_priority text NOT NULL DEFAULT 'normal'
    CHECK (default_priority IN ('low', 'normal', 'high', 'urgent'));
ALTER TABLE service_types ADD COLUMN resolution_codes text[] NOT NULL DEFAULT ARRAY[
    'collected', 'cleaned', 'removed', 'painted_over', 'pressure_washed', 'patched', 'filled', 'repaired',
    'relamped', 'photocell_replaced', 'circuit_repaired', 'resolved', 'partial', 'not_found'
]::text[] CHECK (cardinality(resolution_codes) BETWEEN 1 AND 100);
ALTER TABLE service_types ADD COLUMN reason_codes text[] NOT NULL DEFAULT ARRAY[
    'no_access', 'items_not_out', 'not_found', 'blocked', 'unsafe', 'occupied', 'private_property',
    'hazmat_referral', 'utility_cut', 'pole_down_referral', 'edison_referral', 'wrong_area', 'referred_out'
]::text[] CHECK (cardinality(reason_codes) BETWEEN 1 AND 100);
ALTER TABLE service_types ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

-- Supervisors and admins are disabled (revoked_at, kept) and their tokens rotated (token_hash replaced); audit_log
-- records both. Organisation actions have no ticket, so their audit rows are found by action.
CREATE INDEX audit_action_idx ON audit_log (action, id) WHERE ticket_id IS NULL;
