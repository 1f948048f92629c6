-- Strategy Worker schema, version 003: the risk ledger (issue 13).
--
-- The total exposure limit is the fleet's, not a process's: every execution records what
-- it holds in the ledger (its long market value at the marks it knew plus the remaining
-- notional of its live buys) in the same transaction as its state, and the fleet's and each
-- user's totals move by the difference. A commit recording new buys holds only if every
-- total it moves stays within its cap: the check and the reservation are one statement on
-- these rows, which serializes them across any number of workers and partitions.

ALTER TABLE strategy_executions
    ADD COLUMN ledger_exposure numeric NOT NULL DEFAULT 0
        CONSTRAINT strategy_executions_ledger_exposure_check CHECK (ledger_exposure >= 0);

CREATE TABLE risk_ledger (
    scope             text        NOT NULL CHECK (scope IN ('fleet', 'user')),
    -- '' for the fleet; the user id for a user.
    scope_key         text        NOT NULL,
    exposure          numeric     NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, scope_key),
    CONSTRAINT risk_ledger_key_check CHECK ((scope = 'fleet') = (scope_key = ''))
);

-- Executions that predate the ledger hold 0 until the first audit recomputes them.
INSERT INTO risk_ledger (scope, scope_key, exposure) VALUES ('fleet', '', 0);
