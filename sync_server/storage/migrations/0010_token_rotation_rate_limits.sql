-- Device token rotation with a grace window: the token a device used to ask for rotation stays valid until
-- prev_token_expires_at, so a rotation whose answer was lost never locks the device out (it retries with it).
ALTER TABLE devices
    ADD COLUMN prev_token_hash       bytea UNIQUE,
    ADD COLUMN prev_token_expires_at timestamptz,
    ADD COLUMN token_rotated_at      timestamptz;

-- Fixed-window request counters shared by every server process (per device, per client address). UNLOGGED: losing
-- them in a crash or failover only resets the windows, and it spares the WAL a write per request.
CREATE UNLOGGED TABLE rate_limits (
    key          text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL
);
