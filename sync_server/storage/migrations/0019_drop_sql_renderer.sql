-- Ticket documents are built and rendered in Python only (domain/document.py): every writer reads typed rows
-- (storage/tickets.load_tickets) or renders from the push's fold, so the SQL renderer's timestamp helper is dead.
-- The wire's timestamp form is protocol.fields.format_datetime.
DROP FUNCTION fs_ts(timestamptz);
