-- Strategy Worker schema, version 001.
--
-- Applied by `strategy-worker db migrate` (records the version and checksum in
-- schema_migrations; never edit this file once applied: add 002_*.sql instead).
-- On an empty database `psql -f migrations/001_strategy_worker.sql` gives the same schema.
--
-- Rules every table keeps:
--   * money, prices and quantities are NUMERIC (exact; the application uses Decimal);
--   * configs and positions are JSONB, with Decimals written as JSON strings;
--   * every instant is timestamptz;
--   * enumerations are CHECK constraints, so a typo can never be stored;
--   * duplicates are impossible by constraint, not by application care.

-- One row per approved strategy message. execution_id is uuid5(strategy_id, message
-- timestamp) (domain/ids.py), so a redelivered message maps to the same primary key, and
-- UNIQUE (strategy_id, approved_at) holds even if the timestamp text were spelled differently.
CREATE TABLE strategy_executions (
    execution_id      uuid        PRIMARY KEY,
    strategy_id       uuid        NOT NULL,
    user_id           uuid        NOT NULL,
    approved_at       timestamptz NOT NULL,
    status            text        NOT NULL DEFAULT 'active'
        CONSTRAINT strategy_executions_status_check
        CHECK (status IN ('active', 'paused', 'stopped', 'completed', 'error')),
    config            jsonb       NOT NULL,
    positions         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    initial_capital   numeric     NOT NULL CHECK (initial_capital > 0),
    cash              numeric     NOT NULL,
    fees              numeric     NOT NULL DEFAULT 0 CHECK (fees >= 0),
    total_pnl         numeric     NOT NULL DEFAULT 0,
    realized_pnl      numeric     NOT NULL DEFAULT 0,
    unrealized_pnl    numeric     NOT NULL DEFAULT 0,
    total_trades      integer     NOT NULL DEFAULT 0 CHECK (total_trades >= 0),
    winning_trades    integer     NOT NULL DEFAULT 0 CHECK (winning_trades >= 0),
    losing_trades     integer     NOT NULL DEFAULT 0 CHECK (losing_trades >= 0),
    -- Risk state that must survive restarts: a halted execution stays halted, and the
    -- daily loss budget is measured from the equity persisted at the start of the day.
    trading_state     text        NOT NULL DEFAULT 'ACTIVE'
        CONSTRAINT strategy_executions_trading_state_check
        CHECK (trading_state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    trading_day       date,
    day_start_equity  numeric,
    -- The next order intent gets this sequence number (client order id, domain/ids.py);
    -- persisted with the intents so a restart never reuses a client order id.
    next_intent_seq   integer     NOT NULL DEFAULT 1 CHECK (next_intent_seq >= 1),
    stop_reason       text,
    started_at        timestamptz NOT NULL,
    stopped_at        timestamptz,
    -- Ownership lease (one worker drives an execution at a time). lease_epoch is a fencing
    -- token: it grows on every acquisition, and state writes carry (owner_id, lease_epoch).
    owner_id          text,
    lease_epoch       bigint      NOT NULL DEFAULT 0 CHECK (lease_epoch >= 0),
    lease_expires_at  timestamptz,
    heartbeat_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT strategy_executions_message_key UNIQUE (strategy_id, approved_at),
    CONSTRAINT strategy_executions_lease_check
        CHECK ((owner_id IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT strategy_executions_day_check
        CHECK ((trading_day IS NULL) = (day_start_equity IS NULL))
);

-- Lease takeover scans running executions by lease expiry (FOR UPDATE SKIP LOCKED).
CREATE INDEX strategy_executions_running_lease_idx
    ON strategy_executions (lease_expires_at NULLS FIRST)
    WHERE status IN ('active', 'paused');
CREATE INDEX strategy_executions_owner_idx
    ON strategy_executions (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX strategy_executions_status_idx ON strategy_executions (status);
CREATE INDEX strategy_executions_user_idx ON strategy_executions (user_id);

-- One row per order intent, written before the OMS hears of it. client_order_id is
-- deterministic (execution_id, intent_seq), hence both UNIQUE constraints.
CREATE TABLE execution_orders (
    order_id          uuid        PRIMARY KEY,
    execution_id      uuid        NOT NULL REFERENCES strategy_executions (execution_id),
    client_order_id   text        NOT NULL,
    intent_seq        integer     NOT NULL CHECK (intent_seq >= 1),
    oms_order_id      text,
    symbol            text        NOT NULL CHECK (symbol <> ''),
    side              text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type        text        NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT')),
    purpose           text        NOT NULL
        CHECK (purpose IN ('INITIAL', 'REBALANCE', 'STOP_LOSS', 'CLOSE')),
    quantity          numeric     NOT NULL CHECK (quantity > 0),
    -- Reference price used for sizing and risk (the limit price for LIMIT orders).
    price             numeric     NOT NULL CHECK (price > 0),
    limit_price       numeric     CHECK (limit_price > 0),
    status            text        NOT NULL DEFAULT 'PENDING'
        CONSTRAINT execution_orders_status_check
        CHECK (status IN ('PENDING', 'ACCEPTED', 'PARTIALLY_FILLED', 'REJECTED', 'FILLED',
                          'CANCELLED')),
    filled_quantity   numeric     NOT NULL DEFAULT 0,
    -- Average fill price; NULL until the first fill.
    filled_price      numeric     CHECK (filled_price > 0),
    fees              numeric     NOT NULL DEFAULT 0 CHECK (fees >= 0),
    reason            text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT execution_orders_client_order_id_key UNIQUE (client_order_id),
    CONSTRAINT execution_orders_intent_key UNIQUE (execution_id, intent_seq),
    CONSTRAINT execution_orders_filled_check
        CHECK (filled_quantity >= 0 AND filled_quantity <= quantity)
);

-- Recovery and reconciliation read the orders still in flight.
CREATE INDEX execution_orders_open_idx
    ON execution_orders (execution_id)
    WHERE status IN ('PENDING', 'ACCEPTED', 'PARTIALLY_FILLED');
CREATE INDEX execution_orders_oms_order_idx
    ON execution_orders (oms_order_id) WHERE oms_order_id IS NOT NULL;

-- Every trade the OMS reported, once (fill_id is unique per OMS). Positions, cash, fees and
-- every P&L figure of an execution can be recomputed from these rows alone.
CREATE TABLE execution_fills (
    fill_id           text        PRIMARY KEY,
    client_order_id   text        NOT NULL
        REFERENCES execution_orders (client_order_id),
    symbol            text        NOT NULL CHECK (symbol <> ''),
    side              text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity          numeric     NOT NULL CHECK (quantity > 0),
    price             numeric     NOT NULL CHECK (price > 0),
    fee               numeric     NOT NULL DEFAULT 0 CHECK (fee >= 0),
    filled_at         timestamptz NOT NULL,
    -- The OMS execution-report sequence that carried the fill (NULL when found by
    -- reconciliation rather than on the report stream).
    oms_seq           bigint      CHECK (oms_seq >= 0),
    recorded_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX execution_fills_order_idx ON execution_fills (client_order_id, filled_at);

-- Historical position tracking (spec columns plus realized P&L and cash).
CREATE TABLE position_snapshots (
    snapshot_id       uuid        PRIMARY KEY,
    execution_id      uuid        NOT NULL REFERENCES strategy_executions (execution_id),
    taken_at          timestamptz NOT NULL,
    positions         jsonb       NOT NULL,
    total_value       numeric     NOT NULL,
    total_pnl         numeric     NOT NULL,
    unrealized_pnl    numeric     NOT NULL,
    realized_pnl      numeric     NOT NULL DEFAULT 0,
    cash              numeric,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX position_snapshots_execution_idx
    ON position_snapshots (execution_id, taken_at DESC);

-- Risk event audit log; the same facts also go out on strategy.execution.
CREATE TABLE risk_events (
    event_id          uuid        PRIMARY KEY,
    execution_id      uuid        NOT NULL REFERENCES strategy_executions (execution_id),
    event_type        text        NOT NULL CHECK (event_type <> ''),
    severity          text        NOT NULL
        CONSTRAINT risk_events_severity_check
        CHECK (severity IN ('INFO', 'WARNING', 'CRITICAL')),
    description       text        NOT NULL,
    action_taken      text        NOT NULL DEFAULT '',
    details           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at       timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX risk_events_execution_idx ON risk_events (execution_id, occurred_at);
CREATE INDEX risk_events_severity_idx ON risk_events (severity, occurred_at);

-- Control requests (stop / pause / resume) seen, so a replayed message never acts twice.
-- execution_id has no foreign key on purpose: a request naming an unknown execution is
-- still recorded (and refused).
CREATE TABLE control_requests (
    request_id        text        PRIMARY KEY CHECK (request_id <> ''),
    execution_id      uuid,
    requested_by      text        NOT NULL,
    action            text        NOT NULL CHECK (action <> ''),
    payload           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    outcome           text        NOT NULL DEFAULT 'RECEIVED'
        CONSTRAINT control_requests_outcome_check
        CHECK (outcome IN ('RECEIVED', 'APPLIED', 'REFUSED', 'FAILED')),
    detail            text        NOT NULL DEFAULT '',
    received_at       timestamptz NOT NULL,
    completed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX control_requests_execution_idx
    ON control_requests (execution_id) WHERE execution_id IS NOT NULL;
CREATE INDEX control_requests_pending_idx
    ON control_requests (received_at) WHERE outcome = 'RECEIVED';

-- Where each OMS execution-report stream resumes (reports with seq > last_seq).
CREATE TABLE oms_report_cursor (
    name              text        PRIMARY KEY,
    last_seq          bigint      NOT NULL CHECK (last_seq >= 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
