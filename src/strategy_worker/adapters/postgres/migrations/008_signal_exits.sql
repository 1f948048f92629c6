-- Strategy Worker schema, version 008: a strategy's own rules in the runtime (issue 14).
--
-- An exit rule that fires closes the symbol's position with a SELL whose purpose is EXIT
-- (docs/signals.md, "What rules do to an execution"); the purpose CHECK of 005 becomes a
-- superset that admits it. Old rows stay valid. Like 001 and 005, the constraint is named,
-- so a later migration can replace it.

ALTER TABLE execution_orders DROP CONSTRAINT execution_orders_purpose_check;
ALTER TABLE execution_orders ADD CONSTRAINT execution_orders_purpose_check
    CHECK (purpose IN ('INITIAL', 'REBALANCE', 'STOP_LOSS', 'CLOSE', 'TAKE_PROFIT',
                       'TRAILING_STOP', 'EXIT'));

-- A worker resumes the bar topic from shortly before the newest bar any worker received
-- from it (runtime/wiring.py); bars are written roughly in arrival order, so a BRIN index
-- on received_at answers "the newest of the last days" for almost no write cost, whatever
-- the bars' own dates (a backfill publishes old bars now).
CREATE INDEX market_bars_received_brin ON market_bars USING brin (received_at);
