-- Strategy Worker schema, version 006: retention of position_snapshots.
--
-- position_snapshots gains a row per execution per monitor cycle (14.4 million a day at
-- 10,000 executions and 60 s). adapters/postgres/retention.py thins old rows (README,
-- "Persistence"; docs/retention.md) and keeps its progress here, so each run reads only the
-- rows that crossed a window since the last one, and one worker at a time runs it (a lease
-- on this row: no session state, nothing held between statements).
--
-- The existing position_snapshots_execution_idx (execution_id, taken_at DESC) serves every
-- query of the thinning (per execution, by time range); no new index is needed.

CREATE TABLE snapshot_retention (
    name            text        PRIMARY KEY CHECK (name = 'position_snapshots'),
    -- Every snapshot taken before this instant (and at or after daily_before) has been
    -- thinned to the last, lowest and highest of its UTC hour.
    hourly_before   timestamptz,
    -- Every snapshot taken before this instant (the start of a trading day) has been
    -- thinned to the last, lowest and highest of its trading day.
    daily_before    timestamptz,
    lease_owner     text,
    lease_until     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshot_retention_lease_check CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

INSERT INTO snapshot_retention (name) VALUES ('position_snapshots');
