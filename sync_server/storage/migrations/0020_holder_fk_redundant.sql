-- tickets.holder_crew_id is generated as `crew_id` or NULL (migration 0014), and tickets.crew_id references crews, so its
-- own foreign key to crews can never fail. It still cost every ticket update an after-row trigger check, and every
-- update that moved the holder (a status change in or out of the held set) a key-share lock query on the crew's row:
-- concurrent pushes of one crew's devices then share that lock through a MultiXact. tests/test_holder_rule.py pins the
-- generated expression; tickets_crew_id_fkey keeps the guarantee.
ALTER TABLE tickets DROP CONSTRAINT tickets_holder_crew_id_fkey;
