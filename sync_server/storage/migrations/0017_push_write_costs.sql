-- PostgreSQL's work per push (issue 17): foreign-key checks and an index that every push paid for and nothing needs.
--
-- Three foreign keys are checked row by row by RI triggers, each a query of its own: mutation_results.device_id (one
-- check per mutation: 25 per 25-mutation push), ticket_items.ticket_id and ticket_notes.ticket_id (one per new item
-- line or note). Together they were ~7 % of PostgreSQL's CPU in a 25-mutation push. What they guaranteed still holds,
-- by construction and by check:
--   * inserts: stored results, item lines and notes are written only by the push statement (storage/sync.apply_push),
--     in the transaction that holds the device row (FOR UPDATE, so it exists) and the row lock of every ticket it
--     writes (begin_push, FOR UPDATE), or inserted that ticket in the same statement (a self-report). Nothing else
--     inserts into these tables;
--   * deletes (and id changes) of the parent: no code deletes a device or a ticket, and the triggers below refuse,
--     with the foreign-key error code, deleting a device that has stored results or a ticket that has notes or item
--     lines, and changing either's id, just as the foreign keys did (NO ACTION);
--   * `fieldsync check` reports any result, note or item line without its parent (storage/integrity.orphan_children),
--     and every test database is checked for them when its test ends (tests/conftest.py).
-- The change log (`changes`) has never had a foreign key to tickets for the same reason.
ALTER TABLE mutation_results DROP CONSTRAINT mutation_results_device_id_fkey;
ALTER TABLE ticket_items DROP CONSTRAINT ticket_items_ticket_id_fkey;
ALTER TABLE ticket_notes DROP CONSTRAINT ticket_notes_ticket_id_fkey;

CREATE FUNCTION fs_device_keeps_results() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM mutation_results WHERE device_id = OLD.id) THEN
        RAISE foreign_key_violation USING MESSAGE = format('device %s still has stored push results', OLD.id),
            TABLE = 'mutation_results';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER devices_keep_results AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION fs_device_keeps_results();
CREATE TRIGGER devices_keep_results_id AFTER UPDATE OF id ON devices
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION fs_device_keeps_results();

CREATE FUNCTION fs_ticket_keeps_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ticket_notes WHERE ticket_id = OLD.id)
       OR EXISTS (SELECT 1 FROM ticket_items WHERE ticket_id = OLD.id) THEN
        RAISE foreign_key_violation USING MESSAGE = format('ticket %s still has notes or item lines', OLD.id),
            TABLE = 'tickets';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tickets_keep_children AFTER DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION fs_ticket_keeps_children();
CREATE TRIGGER tickets_keep_children_id AFTER UPDATE OF id ON tickets
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION fs_ticket_keeps_children();

-- No query reads the audit log by department (the ticket history reads it by ticket, retention and the archive by id,
-- organisation actions by action), yet every audited mutation inserted into this index: 25 entries per push.
DROP INDEX audit_department_idx;
