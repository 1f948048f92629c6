-- Strategy Worker schema, version 008: orders of a strategy's own exit rule (issue 14).
--
-- An exit rule that fires closes the symbol's position with a SELL whose purpose is EXIT
-- (docs/signals.md, "What rules do to an execution"); the purpose CHECK of 005 becomes a
-- superset that admits it. Old rows stay valid. Like 001 and 005, the constraint is named,
-- so a later migration can replace it.

ALTER TABLE execution_orders DROP CONSTRAINT execution_orders_purpose_check;
ALTER TABLE execution_orders ADD CONSTRAINT execution_orders_purpose_check
    CHECK (purpose IN ('INITIAL', 'REBALANCE', 'STOP_LOSS', 'CLOSE', 'TAKE_PROFIT',
                       'TRAILING_STOP', 'EXIT'));
