-- Strategy Worker schema, version 004: market bars and signal decisions (docs/signals.md).
--
-- market_bars: closed bars as the worker used them (from the bar topic, built from price
-- announcements, or imported with `strategy-worker bars import`); the warm-up history an
-- execution loads at start and the bars a rebuild replays. One row per (symbol, timeframe,
-- bar_start): the first version written stays unless an import asks to replace it, so a
-- rebuild replays exactly the bars that were used. Pruned by signals.bar_retention_days
-- (null: kept).
CREATE TABLE market_bars (
    symbol        text        NOT NULL CHECK (symbol ~ '^[A-Z][A-Z0-9.\-]{0,9}$'),
    timeframe     text        NOT NULL CHECK (timeframe ~ '^[1-9][0-9]{0,2}[mhdw]$'),
    bar_start     timestamptz NOT NULL,
    open          numeric     NOT NULL CHECK (open > 0),
    high          numeric     NOT NULL,
    low           numeric     NOT NULL CHECK (low > 0),
    close         numeric     NOT NULL CHECK (close > 0),
    volume        numeric     NOT NULL DEFAULT 0 CHECK (volume >= 0),
    source        text        NOT NULL CHECK (source <> ''),
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (symbol, timeframe, bar_start),
    CONSTRAINT market_bars_ohlc_check
        CHECK (high >= greatest(open, close, low) AND low <= least(open, close))
);

-- Retention deletes by age across all streams; bars arrive roughly in time order, so a
-- BRIN index answers that for almost no write cost.
CREATE INDEX market_bars_start_brin ON market_bars USING brin (bar_start);

-- signal_decisions: why an execution did or did not trade. One row per evaluation that
-- fired or changed its outcome (domain/signals/engine.py), with the values it read, the
-- gate that blocked an order, if any. The key makes a replayed bar record nothing twice.
-- No foreign key to strategy_executions on purpose: a decision is a log line, inserted in
-- the runtime's commit transaction next to other rows that already lock the execution,
-- and pruned by age; an extra KEY SHARE lock per row would buy nothing.
-- Retention: rows older than signals.decision_retention_days (90) are deleted.
CREATE TABLE signal_decisions (
    execution_id  uuid        NOT NULL,
    symbol        text        NOT NULL CHECK (symbol <> ''),
    timeframe     text        NOT NULL CHECK (timeframe ~ '^[1-9][0-9]{0,2}[mhdw]$'),
    bar_start     timestamptz NOT NULL,
    rule          text        NOT NULL CHECK (rule IN ('entry', 'exit')),
    outcome       text        NOT NULL CHECK (outcome IN ('fired', 'met', 'not_met', 'warmup')),
    gate          text        CHECK (gate ~ '^[a-z_]{1,40}$'),
    "values"      jsonb       NOT NULL,
    decided_at    timestamptz NOT NULL,
    PRIMARY KEY (execution_id, symbol, timeframe, bar_start, rule)
);

CREATE INDEX signal_decisions_decided_idx ON signal_decisions (decided_at);
