-- Servers cache device principals (sync_server/auth.py AuthCache). Whenever what a cached principal says may have
-- changed — the device revoked, its token rotated, the device deleted or moved to another crew, its crew moved to
-- another department — NOTIFY fieldsync_auth (payload: the device id, or '*' for every device), from whatever made the
-- change: API, console, CLI or plain SQL. Every server process LISTENs on the live hub's connection and drops the
-- entry, so revocation takes effect at once everywhere while the cache keeps principals for a minute.
-- Column lists keep the triggers off the hot path: a push updates only last_seq, a request only last_seen_at.

CREATE FUNCTION fs_auth_device_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fieldsync_auth', OLD.id);
    RETURN NULL;
END $$;

CREATE TRIGGER devices_auth_changed
    AFTER UPDATE OF revoked_at, token_hash, prev_token_hash, prev_token_expires_at, crew_id ON devices
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.token_hash IS DISTINCT FROM NEW.token_hash
          OR OLD.prev_token_hash IS DISTINCT FROM NEW.prev_token_hash
          OR OLD.prev_token_expires_at IS DISTINCT FROM NEW.prev_token_expires_at OR OLD.crew_id IS DISTINCT FROM NEW.crew_id)
    EXECUTE FUNCTION fs_auth_device_changed();

CREATE TRIGGER devices_auth_deleted AFTER DELETE ON devices FOR EACH ROW EXECUTE FUNCTION fs_auth_device_changed();

CREATE FUNCTION fs_auth_crew_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fieldsync_auth', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER crews_auth_moved
    AFTER UPDATE OF department_id ON crews
    FOR EACH ROW WHEN (OLD.department_id IS DISTINCT FROM NEW.department_id)
    EXECUTE FUNCTION fs_auth_crew_moved();
