-- Strategy Worker schema, version 005: protective orders (issue 16, OMS contract 1.1).
--
-- execution_orders learns the resting stops (STOP, STOP_LIMIT, TRAILING_STOP), the exits'
-- purposes (TAKE_PROFIT, TRAILING_STOP), and the columns those orders need; every protective
-- order is still a row here, recorded before the OMS hears of it. execution_protection holds
-- each execution's protection state (domain/protection, ProtectionBook.to_json): the
-- emulated legs, trailing watermarks, latched triggers and the native legs it placed,
-- written in the same transaction as the intents it decided, so a restart or a takeover
-- re-arms exactly what was committed.
--
-- Old rows stay valid: every new column is NULL (or false) for MARKET and LIMIT orders, and
-- the new CHECKs are supersets of the old ones. Like 001, constraints are named so a later
-- migration can replace them. Adding a CHECK validates existing rows once, under the lock
-- this transaction holds anyway.

ALTER TABLE execution_orders DROP CONSTRAINT execution_orders_order_type_check;
ALTER TABLE execution_orders ADD CONSTRAINT execution_orders_order_type_check
    CHECK (order_type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT', 'TRAILING_STOP'));

ALTER TABLE execution_orders DROP CONSTRAINT execution_orders_purpose_check;
ALTER TABLE execution_orders ADD CONSTRAINT execution_orders_purpose_check
    CHECK (purpose IN ('INITIAL', 'REBALANCE', 'STOP_LOSS', 'CLOSE', 'TAKE_PROFIT',
                       'TRAILING_STOP'));

ALTER TABLE execution_orders
    -- STOP / STOP_LIMIT trigger level (a STOP_LIMIT's limit is limit_price).
    ADD COLUMN stop_price numeric
        CONSTRAINT execution_orders_stop_price_check CHECK (stop_price > 0),
    -- TRAILING_STOP: exactly one of pct (a fraction) and amount; the optional limit offset
    -- (LIMIT on trigger) and the watermark it started from.
    ADD COLUMN trail_pct numeric
        CONSTRAINT execution_orders_trail_pct_check CHECK (trail_pct > 0 AND trail_pct < 1),
    ADD COLUMN trail_amount numeric
        CONSTRAINT execution_orders_trail_amount_check CHECK (trail_amount > 0),
    ADD COLUMN trail_limit_offset numeric
        CONSTRAINT execution_orders_trail_limit_offset_check CHECK (trail_limit_offset >= 0),
    ADD COLUMN trail_reference numeric
        CONSTRAINT execution_orders_trail_reference_check CHECK (trail_reference > 0),
    -- A bracket child fills at most what its parent filled (the parent is recorded first).
    ADD COLUMN parent_client_order_id text
        CONSTRAINT execution_orders_parent_fkey
        REFERENCES execution_orders (client_order_id),
    -- Members of one OCO group share one quantity at the OMS.
    ADD COLUMN oco_group_id text
        CONSTRAINT execution_orders_oco_group_id_check CHECK (oco_group_id <> ''),
    -- The OMS never fills it beyond the execution's position.
    ADD COLUMN reduce_only boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT execution_orders_stop_shape_check
        CHECK ((order_type IN ('STOP', 'STOP_LIMIT')) = (stop_price IS NOT NULL)),
    ADD CONSTRAINT execution_orders_stop_limit_shape_check
        CHECK (order_type <> 'STOP_LIMIT' OR limit_price IS NOT NULL),
    ADD CONSTRAINT execution_orders_trail_shape_check
        CHECK (CASE WHEN order_type = 'TRAILING_STOP'
                    THEN num_nonnulls(trail_pct, trail_amount) = 1
                    ELSE num_nonnulls(trail_pct, trail_amount, trail_limit_offset,
                                      trail_reference) = 0
               END);

-- The legs of one OCO group, and a parent's children, are read together.
CREATE INDEX execution_orders_oco_group_idx
    ON execution_orders (execution_id, oco_group_id) WHERE oco_group_id IS NOT NULL;
CREATE INDEX execution_orders_parent_idx
    ON execution_orders (parent_client_order_id) WHERE parent_client_order_id IS NOT NULL;

-- One row per execution with protection: its ProtectionBook state (JSONB, Decimals as
-- strings, format version in state_version), written fenced by the execution's lease in
-- the transaction that records the protective intents it decided. `revision` grows with
-- every write; `unprotected` is how many open positions had no live protection at that
-- write (expected 0; the metric strategy_positions_unprotected is computed live).
CREATE TABLE execution_protection (
    execution_id      uuid        PRIMARY KEY
        REFERENCES strategy_executions (execution_id),
    state             jsonb       NOT NULL,
    state_version     integer     NOT NULL CHECK (state_version >= 1),
    revision          bigint      NOT NULL DEFAULT 1 CHECK (revision >= 1),
    unprotected       integer     NOT NULL DEFAULT 0 CHECK (unprotected >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX execution_protection_unprotected_idx
    ON execution_protection (execution_id) WHERE unprotected > 0;
