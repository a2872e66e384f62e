-- Change rows carry their document as stored text and msgpack (doc_json, doc_mp: 0012), which every reader uses now;
-- the jsonb copy is no longer written (parsing it cost the push's insert, and it was a third copy of each document).
-- Rows written before keep theirs.
ALTER TABLE changes ALTER COLUMN doc DROP NOT NULL;
