-- Each ticket's wire document is stored rendered (domain/document.py): the canonical JSON text the checksum hashes
-- (doc_json, next to doc_hash) and msgpack bytes of the same document (doc_mp), on the ticket row and on every
-- change-log row, so readers splice stored bytes instead of rendering or decoding documents.
-- Canonical bytes come from Python (float and string rules of SPEC §Canonical form), so existing rows are back-filled
-- by storage/migrate.py right after this file, in the same transaction, which then makes the change-log columns
-- NOT NULL. tickets.doc_json is NULL only inside the transaction that inserts the ticket, until its change is recorded.
ALTER TABLE tickets ADD COLUMN doc_json text, ADD COLUMN doc_mp bytea;
ALTER TABLE changes ADD COLUMN doc_json text, ADD COLUMN doc_mp bytea;
