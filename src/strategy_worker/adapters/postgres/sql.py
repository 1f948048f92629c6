"""Every SQL statement of the repository, as literal text with $n parameters only.

Nothing is ever formatted into these strings; values always travel as parameters.
The fence condition `($o::text IS NULL OR (owner_id = $o AND lease_epoch = $e))` lets an
unfenced write (o = NULL) through, and otherwise only the lease holder at that epoch.
"""

from __future__ import annotations

INSERT_EXECUTION = """
INSERT INTO strategy_executions (
    execution_id, strategy_id, user_id, approved_at, config, initial_capital, started_at,
    next_intent_seq, owner_id, lease_epoch, lease_expires_at, heartbeat_at,
    status, positions, cash, fees, realized_pnl, unrealized_pnl, total_pnl,
    total_trades, winning_trades, losing_trades, trading_state, trading_day,
    day_start_equity, stop_reason, stopped_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text,
    CASE WHEN $9::text IS NULL THEN 0 ELSE 1 END,
    CASE WHEN $9::text IS NULL THEN NULL ELSE now() + make_interval(secs => $10) END,
    CASE WHEN $9::text IS NULL THEN NULL ELSE now() END,
    $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)
ON CONFLICT DO NOTHING
RETURNING execution_id
"""

EXISTING_EXECUTIONS = """
SELECT execution_id FROM strategy_executions WHERE execution_id = ANY($1::uuid[])
"""

# Parameters $2..$16 are rows.state_params(); $17/$18 the fence.
UPDATE_STATE = """
UPDATE strategy_executions SET
    status = $2, positions = $3, cash = $4, fees = $5, realized_pnl = $6,
    unrealized_pnl = $7, total_pnl = $8, total_trades = $9, winning_trades = $10,
    losing_trades = $11, trading_state = $12, trading_day = $13, day_start_equity = $14,
    stop_reason = $15, stopped_at = $16, updated_at = now()
WHERE execution_id = $1
  AND ($17::text IS NULL OR (owner_id = $17::text AND lease_epoch = $18::bigint))
RETURNING execution_id
"""

# Statements that update many executions lock their rows in execution_id order first
# (`locked`), so two of them (a batch of states, a lease renewal) never deadlock. The lock is
# FOR NO KEY UPDATE (what an UPDATE of non-key columns takes anyway): FOR UPDATE would also
# wait for the KEY SHARE locks that inserting snapshots, orders or risk events hold on their
# executions, in no particular order, and deadlock with them.

# One statement for a batch of fenced state writes (the monitor's per-cycle writes).
UPDATE_STATES = """
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::numeric[],
            $6::numeric[], $7::numeric[], $8::numeric[], $9::integer[], $10::integer[],
            $11::integer[], $12::text[], $13::date[], $14::numeric[], $15::text[],
            $16::timestamptz[], $17::text[], $18::bigint[])
    AS u(execution_id, status, positions, cash, fees, realized_pnl, unrealized_pnl,
         total_pnl, total_trades, winning_trades, losing_trades, trading_state,
         trading_day, day_start_equity, stop_reason, stopped_at, owner_id, lease_epoch)
), locked AS (
    SELECT execution_id FROM strategy_executions
    WHERE execution_id IN (SELECT execution_id FROM u)
    ORDER BY execution_id
    FOR NO KEY UPDATE
)
UPDATE strategy_executions AS e SET
    status = u.status, positions = u.positions::jsonb, cash = u.cash, fees = u.fees,
    realized_pnl = u.realized_pnl, unrealized_pnl = u.unrealized_pnl,
    total_pnl = u.total_pnl, total_trades = u.total_trades,
    winning_trades = u.winning_trades, losing_trades = u.losing_trades,
    trading_state = u.trading_state, trading_day = u.trading_day,
    day_start_equity = u.day_start_equity, stop_reason = u.stop_reason,
    stopped_at = u.stopped_at, updated_at = now()
FROM u
WHERE e.execution_id = u.execution_id
  AND e.execution_id IN (SELECT execution_id FROM locked)
  AND (u.owner_id IS NULL OR (e.owner_id = u.owner_id AND e.lease_epoch = u.lease_epoch))
RETURNING e.execution_id
"""

ADVANCE_INTENT_SEQ = """
UPDATE strategy_executions
SET next_intent_seq = GREATEST(next_intent_seq, $2), updated_at = now()
WHERE execution_id = $1
  AND ($3::text IS NULL OR (owner_id = $3::text AND lease_epoch = $4::bigint))
RETURNING execution_id
"""

EXECUTION_HOLDER = """
SELECT owner_id, lease_epoch FROM strategy_executions WHERE execution_id = $1
"""

GET_EXECUTION = "SELECT * FROM strategy_executions WHERE execution_id = $1"

LIST_EXECUTIONS_BY_STATUS = """
SELECT * FROM strategy_executions
WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR owner_id = $2::text)
ORDER BY created_at, execution_id
LIMIT $3
"""

INSERT_INTENTS = """
INSERT INTO execution_orders (
    order_id, execution_id, client_order_id, intent_seq, symbol, side, order_type, purpose,
    quantity, price, limit_price)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::numeric[])
ON CONFLICT DO NOTHING
RETURNING client_order_id
"""

GET_ORDERS_BY_CLIENT_ID = "SELECT * FROM execution_orders WHERE client_order_id = ANY($1::text[])"

GET_ORDERS = "SELECT * FROM execution_orders WHERE execution_id = $1 ORDER BY intent_seq"

GET_ORDER = "SELECT * FROM execution_orders WHERE client_order_id = $1"

# $1: the terminal statuses.
LIST_OPEN_ORDERS = """
SELECT o.* FROM execution_orders AS o
JOIN strategy_executions AS e ON e.execution_id = o.execution_id
WHERE NOT o.status = ANY($1::text[])
  AND ($2::uuid IS NULL OR o.execution_id = $2::uuid)
  AND ($3::text IS NULL OR e.owner_id = $3::text)
ORDER BY o.execution_id, o.intent_seq
"""

INSERT_FILLS = """
INSERT INTO execution_fills (
    fill_id, client_order_id, symbol, side, quantity, price, fee, filled_at, oms_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[],
                     $6::numeric[], $7::numeric[], $8::timestamptz[], $9::bigint[])
ON CONFLICT (fill_id) DO NOTHING
RETURNING fill_id
"""

GET_FILLS = """
SELECT f.* FROM execution_fills AS f
JOIN execution_orders AS o ON o.client_order_id = f.client_order_id
WHERE o.execution_id = $1
ORDER BY f.filled_at, f.oms_seq NULLS LAST, f.fill_id
"""

# Stale updates are skipped: an order never leaves a terminal status ($8) for an open one
# and its filled quantity never goes down (reports can be replayed or arrive late).
APPLY_ORDER_UPDATES = """
UPDATE execution_orders AS o SET
    status = u.status,
    filled_quantity = u.filled_quantity,
    filled_price = COALESCE(u.filled_price, o.filled_price),
    oms_order_id = COALESCE(u.oms_order_id, o.oms_order_id),
    fees = COALESCE(u.fees, o.fees),
    reason = COALESCE(u.reason, o.reason),
    updated_at = now()
FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::text[],
            $6::numeric[], $7::text[])
     AS u(client_order_id, status, filled_quantity, filled_price, oms_order_id, fees, reason)
WHERE o.client_order_id = u.client_order_id
  AND u.filled_quantity >= o.filled_quantity
  AND NOT (o.status = ANY($8::text[]) AND NOT u.status = ANY($8::text[]))
RETURNING o.client_order_id
"""

INSERT_SNAPSHOT = """
INSERT INTO position_snapshots (
    snapshot_id, execution_id, taken_at, positions, total_value, total_pnl, unrealized_pnl,
    realized_pnl, cash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (snapshot_id) DO NOTHING
"""

GET_SNAPSHOTS = """
SELECT * FROM position_snapshots WHERE execution_id = $1
ORDER BY taken_at DESC, snapshot_id
LIMIT $2
"""

INSERT_RISK_EVENT = """
INSERT INTO risk_events (
    event_id, execution_id, event_type, severity, description, action_taken, details,
    occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (event_id) DO NOTHING
"""

GET_RISK_EVENTS = """
SELECT * FROM risk_events WHERE execution_id = $1 ORDER BY occurred_at, event_id
"""

# $3: the running statuses. SKIP LOCKED: a row another acquirer is taking is skipped, and
# READ COMMITTED re-checks the WHERE clause on rows committed meanwhile.
ACQUIRE_EXECUTIONS = """
WITH candidates AS (
    SELECT execution_id FROM strategy_executions
    WHERE status = ANY($3::text[])
      AND (owner_id IS NULL OR lease_expires_at <= now() OR ($5 AND owner_id = $1))
    ORDER BY lease_expires_at NULLS FIRST, created_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE strategy_executions AS e
SET owner_id = $1, lease_epoch = e.lease_epoch + 1,
    lease_expires_at = now() + make_interval(secs => $2), heartbeat_at = now()
FROM candidates AS c
WHERE e.execution_id = c.execution_id
RETURNING e.*
"""

RENEW_LEASES = """
WITH locked AS (
    SELECT execution_id FROM strategy_executions
    WHERE owner_id = $1 AND execution_id = ANY($2::uuid[])
    ORDER BY execution_id
    FOR NO KEY UPDATE
)
UPDATE strategy_executions
SET lease_expires_at = now() + make_interval(secs => $3), heartbeat_at = now()
WHERE owner_id = $1 AND execution_id IN (SELECT execution_id FROM locked)
RETURNING execution_id
"""

RELEASE_EXECUTIONS = """
WITH locked AS (
    SELECT execution_id FROM strategy_executions
    WHERE owner_id = $1 AND execution_id = ANY($2::uuid[])
    ORDER BY execution_id
    FOR NO KEY UPDATE
)
UPDATE strategy_executions SET owner_id = NULL, lease_expires_at = NULL
WHERE owner_id = $1 AND execution_id IN (SELECT execution_id FROM locked)
RETURNING execution_id
"""

INSERT_CONTROL_REQUEST = """
INSERT INTO control_requests (
    request_id, execution_id, requested_by, action, payload, outcome, detail, received_at,
    completed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id
"""

COMPLETE_CONTROL_REQUEST = """
UPDATE control_requests SET outcome = $2, detail = $3, completed_at = $4
WHERE request_id = $1
RETURNING request_id
"""

GET_CONTROL_REQUEST = "SELECT * FROM control_requests WHERE request_id = $1"

# Served by control_requests_pending_idx (outcome = 'RECEIVED'): few rows, oldest first.
LIST_PENDING_CONTROL_REQUESTS = """
SELECT * FROM control_requests
WHERE outcome = 'RECEIVED'
  AND (execution_id = ANY($1::uuid[])
       OR (execution_id IS NULL AND payload->>'strategy_id' = ANY($2::text[])))
ORDER BY received_at, request_id
"""

GET_REPORT_CURSOR = "SELECT last_seq FROM oms_report_cursor WHERE name = $1"

SET_REPORT_CURSOR = """
INSERT INTO oms_report_cursor (name, last_seq) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE
SET last_seq = GREATEST(oms_report_cursor.last_seq, EXCLUDED.last_seq), updated_at = now()
"""
