-- Strategy Worker schema, version 002: the transactional outbox, execution versions, and
-- fills identified per order.
--
-- Applied by `strategy-worker db migrate` after 001 (never edit this file once applied).

-- Every `strategy.execution` event, written in the transaction that made it true (the
-- store's `commit`) and published to Kafka by one relay. `seq` orders the events of one
-- execution as committed (an execution's rows are written under its row lock, so a later
-- commit always draws higher seqs). `published_seq` numbers the published events gap-free
-- in the order the relay published them: the API process follows `published_seq > cursor
-- ORDER BY published_seq`, served by the UNIQUE index. Published rows are pruned after a
-- retention period; the one with the highest published_seq is always kept so numbering
-- never restarts.
CREATE TABLE event_outbox (
    seq               bigserial   PRIMARY KEY,
    -- Deterministic (execution, version, position); the Kafka `event-id` header.
    event_id          uuid        NOT NULL UNIQUE,
    execution_id      uuid        NOT NULL,
    user_id           uuid        NOT NULL,
    -- The Kafka key: the strategy id.
    key               text        NOT NULL CHECK (key <> ''),
    event_type        text        NOT NULL CHECK (event_type <> ''),
    -- The event as published: `json`, not `jsonb`, so it keeps its text and key order
    -- (the spec's event shapes), with Decimals as exact JSON numbers (the wire format).
    payload           json        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    published_seq     bigint      UNIQUE CHECK (published_seq >= 1),
    published_at      timestamptz,
    CONSTRAINT event_outbox_published_check
        CHECK ((published_seq IS NULL) = (published_at IS NULL))
);

-- The relay's claim: unpublished events oldest first (few rows: the relay keeps up).
CREATE INDEX event_outbox_unpublished_idx ON event_outbox (seq) WHERE published_seq IS NULL;
-- Retention: published events by age.
CREATE INDEX event_outbox_published_at_idx
    ON event_outbox (published_at) WHERE published_at IS NOT NULL;

-- Grows by one with every commit that touches the execution: a write states the version it
-- produces, and is applied only on top of the one before it (the writer's view is current).
ALTER TABLE strategy_executions
    ADD COLUMN state_version bigint NOT NULL DEFAULT 1
        CONSTRAINT strategy_executions_state_version_check CHECK (state_version >= 1);

-- The OMS contract makes a fill id unique per order only (two orders' fills may share one,
-- e.g. after the OMS restarted): a fill is identified by its order and its id.
ALTER TABLE execution_fills DROP CONSTRAINT execution_fills_pkey;
ALTER TABLE execution_fills ADD CONSTRAINT execution_fills_pkey
    PRIMARY KEY (client_order_id, fill_id);
