-- Console sign-in for staff (supervisors, admins): a password (argon2id hash, never the password), browser sessions
-- and a failure counter that slows guessing per account and per address.
ALTER TABLE users ADD COLUMN password_hash text;
ALTER TABLE users ADD COLUMN password_set_at timestamptz;

-- Only the SHA-256 of the session cookie is stored, like tokens: a database leak hands out no live session.
CREATE TABLE console_sessions (
    id_hash      bytea PRIMARY KEY,
    user_id      integer NOT NULL REFERENCES users(id),
    csrf_token   text NOT NULL,                       -- echoed in every state-changing request (form field or header)
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),  -- idle expiry counts from here
    expires_at   timestamptz NOT NULL,                -- absolute expiry, never extended
    address      text
);
CREATE INDEX console_sessions_user_idx ON console_sessions (user_id);

-- One row per throttled key ('user:<name>' or 'addr:<ip>'); reset by a successful sign-in.
CREATE TABLE login_throttle (
    key          text PRIMARY KEY,
    failures     integer NOT NULL DEFAULT 0,
    last_failure timestamptz NOT NULL DEFAULT now()
);
