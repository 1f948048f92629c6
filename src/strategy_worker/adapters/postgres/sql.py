"""Every SQL statement of the repository, as literal text with $n parameters only.

Nothing is ever formatted into these strings; values always travel as parameters, batches
as typed arrays through `unnest` (one statement for any number of rows). JSONB values of a
batch travel as text arrays cast with `::jsonb`.

Lock order (no two transactions can wait on each other in a cycle): executions are locked
in execution_id order, by the statement that creates them and then by the one that updates
them (FOR NO KEY UPDATE: FOR UPDATE would also wait for the KEY SHARE locks that inserting
orders, snapshots or risk events hold on their executions, in no particular order, and
deadlocked lease renewals against snapshot batches at 10,000 executions); orders, fills and
history rows belong to one execution, so only the fence holder ever writes them; control
requests are locked in request_id order; the report cursor last.

The commit's batch statements join an `unnest` only to indexed tables, never one CTE's
output to another's: with a row estimate of 1 for such a join the planner scanned one CTE
once per row of the other (a lock-then-update in one statement took 2.4 s for 5,000
writes). What must be compared with stored rows (a replayed intent or fill) is read back
and compared in Python.
"""

from __future__ import annotations

# --- the commit (one transaction per batch; see writes.py) ------------------------------

# $1..$7 the immutable columns, $8 next_intent_seq, $9 the owner (NULL: released at once),
# $10..$24 the state, then the scalars $25 epoch, $26 lease seconds, $27 version, and
# $28 the ledger exposures. Inserted
# in the arrays' order (sorted by execution_id), ON CONFLICT DO NOTHING on the id and on
# the message key (strategy_id, approved_at).
CREATE_EXECUTIONS = """
INSERT INTO strategy_executions (
    execution_id, strategy_id, user_id, approved_at, config, initial_capital, started_at,
    next_intent_seq, owner_id, lease_epoch, lease_expires_at, heartbeat_at, state_version,
    status, positions, cash, fees, realized_pnl, unrealized_pnl, total_pnl,
    total_trades, winning_trades, losing_trades, trading_state, trading_day,
    day_start_equity, stop_reason, stopped_at, ledger_exposure)
SELECT u.execution_id, u.strategy_id, u.user_id, u.approved_at, u.config::jsonb,
    u.initial_capital, u.started_at, u.next_intent_seq, u.owner_id, $25::bigint,
    CASE WHEN u.owner_id IS NULL THEN NULL
         ELSE now() + make_interval(secs => $26::double precision) END,
    CASE WHEN u.owner_id IS NULL THEN NULL ELSE now() END,
    $27::bigint,
    u.status, u.positions::jsonb, u.cash, u.fees, u.realized_pnl, u.unrealized_pnl,
    u.total_pnl, u.total_trades, u.winning_trades, u.losing_trades, u.trading_state,
    u.trading_day, u.day_start_equity, u.stop_reason, u.stopped_at, u.ledger_exposure
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[],
            $6::numeric[], $7::timestamptz[], $8::integer[], $9::text[],
            $10::text[], $11::text[], $12::numeric[], $13::numeric[], $14::numeric[],
            $15::numeric[], $16::numeric[], $17::integer[], $18::integer[], $19::integer[],
            $20::text[], $21::date[], $22::numeric[], $23::text[], $24::timestamptz[],
            $28::numeric[])
     WITH ORDINALITY
     AS u(execution_id, strategy_id, user_id, approved_at, config, initial_capital,
          started_at, next_intent_seq, owner_id,
          status, positions, cash, fees, realized_pnl, unrealized_pnl, total_pnl,
          total_trades, winning_trades, losing_trades, trading_state, trading_day,
          day_start_equity, stop_reason, stopped_at, ledger_exposure, ord)
ORDER BY u.ord
ON CONFLICT DO NOTHING
RETURNING execution_id
"""

# The rows of the writes that are not creations, locked in execution_id order, with what
# their fence and version are checked against (READ COMMITTED: after waiting for a lock, the
# latest row version is returned). Also the lock of the quiet mark writes.
LOCK_EXECUTIONS = """
SELECT execution_id, owner_id, lease_epoch, state_version, user_id, ledger_exposure
FROM strategy_executions
WHERE execution_id = ANY($1::uuid[])
ORDER BY execution_id
FOR NO KEY UPDATE
"""

# The row update of the writes whose fence and version held (their rows are locked by
# LOCK_EXECUTIONS; the WHERE restates the rule). $1..$5 id, owner, epoch, version,
# has_state; $6..$20 the state (ignored where has_state is false); $21 next_intent_seq
# (NULL keeps it; it never goes down); $22 release; $23 ledger exposure (NULL keeps it).
APPLY_WRITES = """
UPDATE strategy_executions AS e SET
    state_version = u.version,
    status = CASE WHEN u.has_state THEN u.status ELSE e.status END,
    positions = CASE WHEN u.has_state THEN u.positions::jsonb ELSE e.positions END,
    cash = CASE WHEN u.has_state THEN u.cash ELSE e.cash END,
    fees = CASE WHEN u.has_state THEN u.fees ELSE e.fees END,
    realized_pnl = CASE WHEN u.has_state THEN u.realized_pnl ELSE e.realized_pnl END,
    unrealized_pnl = CASE WHEN u.has_state THEN u.unrealized_pnl ELSE e.unrealized_pnl END,
    total_pnl = CASE WHEN u.has_state THEN u.total_pnl ELSE e.total_pnl END,
    total_trades = CASE WHEN u.has_state THEN u.total_trades ELSE e.total_trades END,
    winning_trades = CASE WHEN u.has_state THEN u.winning_trades ELSE e.winning_trades END,
    losing_trades = CASE WHEN u.has_state THEN u.losing_trades ELSE e.losing_trades END,
    trading_state = CASE WHEN u.has_state THEN u.trading_state ELSE e.trading_state END,
    trading_day = CASE WHEN u.has_state THEN u.trading_day ELSE e.trading_day END,
    day_start_equity = CASE WHEN u.has_state THEN u.day_start_equity
                            ELSE e.day_start_equity END,
    stop_reason = CASE WHEN u.has_state THEN u.stop_reason ELSE e.stop_reason END,
    stopped_at = CASE WHEN u.has_state THEN u.stopped_at ELSE e.stopped_at END,
    next_intent_seq = GREATEST(e.next_intent_seq, COALESCE(u.next_intent_seq, 1)),
    owner_id = CASE WHEN u.release THEN NULL ELSE e.owner_id END,
    lease_expires_at = CASE WHEN u.release THEN NULL ELSE e.lease_expires_at END,
    ledger_exposure = COALESCE(u.ledger_exposure, e.ledger_exposure),
    updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::boolean[],
            $6::text[], $7::text[], $8::numeric[], $9::numeric[], $10::numeric[],
            $11::numeric[], $12::numeric[], $13::integer[], $14::integer[], $15::integer[],
            $16::text[], $17::date[], $18::numeric[], $19::text[], $20::timestamptz[],
            $21::integer[], $22::boolean[], $23::numeric[])
     AS u(execution_id, owner_id, lease_epoch, version, has_state,
          status, positions, cash, fees, realized_pnl, unrealized_pnl, total_pnl,
          total_trades, winning_trades, losing_trades, trading_state, trading_day,
          day_start_equity, stop_reason, stopped_at, next_intent_seq, release,
          ledger_exposure)
WHERE e.execution_id = u.execution_id
  AND e.owner_id = u.owner_id AND e.lease_epoch = u.lease_epoch
  AND e.state_version = u.version - 1
RETURNING e.execution_id
"""

# Returns the client order ids inserted; the others were recorded before (a replay, or a
# conflict: the caller compares them with GET_ORDERS_BY_CLIENT_ID).
INSERT_INTENTS = """
INSERT INTO execution_orders (
    order_id, execution_id, client_order_id, intent_seq, symbol, side, order_type, purpose,
    quantity, price, limit_price)
SELECT u.order_id, u.execution_id, u.client_order_id, u.intent_seq, u.symbol, u.side,
    u.order_type, u.purpose, u.quantity, u.price, u.limit_price
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::integer[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::numeric[])
     WITH ORDINALITY
     AS u(order_id, execution_id, client_order_id, intent_seq, symbol, side, order_type,
          purpose, quantity, price, limit_price, ord)
ORDER BY u.ord
ON CONFLICT DO NOTHING
RETURNING client_order_id
"""

GET_ORDERS_BY_CLIENT_ID = "SELECT * FROM execution_orders WHERE client_order_id = ANY($1::text[])"

# Stale updates are skipped: an order leaves a terminal status ($9) only by a move of the
# order state machine's table ($10 -> $11: a late fill completing a cancelled order), and
# its filled quantity never goes down (reports can be replayed or arrive late). Only
# orders of the write's own execution ($1) are touched.
APPLY_ORDER_UPDATES = """
UPDATE execution_orders AS o SET
    status = u.status,
    filled_quantity = u.filled_quantity,
    filled_price = COALESCE(u.filled_price, o.filled_price),
    oms_order_id = COALESCE(u.oms_order_id, o.oms_order_id),
    fees = COALESCE(u.fees, o.fees),
    reason = COALESCE(u.reason, o.reason),
    updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::text[],
            $7::numeric[], $8::text[])
     AS u(execution_id, client_order_id, status, filled_quantity, filled_price,
          oms_order_id, fees, reason)
WHERE o.client_order_id = u.client_order_id
  AND o.execution_id = u.execution_id
  AND u.filled_quantity >= o.filled_quantity
  AND (NOT o.status = ANY($9::text[]) OR u.status = o.status
       OR (o.status, u.status) IN (SELECT * FROM unnest($10::text[], $11::text[])))
"""

# Fills keyed by (client_order_id, fill_id), inserted only where the order is one of the
# write's execution ($1); returns the keys inserted. The others were recorded before, or
# name an order that is not the execution's: the caller reads them with GET_FILLS_BY_KEY.
INSERT_FILLS = """
INSERT INTO execution_fills (
    fill_id, client_order_id, symbol, side, quantity, price, fee, filled_at, oms_seq)
SELECT u.fill_id, u.client_order_id, u.symbol, u.side, u.quantity, u.price, u.fee,
    u.filled_at, u.oms_seq
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[],
            $7::numeric[], $8::numeric[], $9::timestamptz[], $10::bigint[])
     WITH ORDINALITY
     AS u(execution_id, client_order_id, fill_id, symbol, side, quantity, price, fee,
          filled_at, oms_seq, ord)
JOIN execution_orders AS o
  ON o.client_order_id = u.client_order_id AND o.execution_id = u.execution_id
ORDER BY u.ord
ON CONFLICT (client_order_id, fill_id) DO NOTHING
RETURNING client_order_id, fill_id
"""

# Recorded fills by key, with the execution of their order.
GET_FILLS_BY_KEY = """
SELECT f.*, o.execution_id FROM unnest($1::text[], $2::text[]) AS k(client_order_id, fill_id)
JOIN execution_fills AS f ON f.client_order_id = k.client_order_id AND f.fill_id = k.fill_id
JOIN execution_orders AS o ON o.client_order_id = f.client_order_id
"""

# Control outcomes, rows locked in request_id order (a handful per commit); returns the ids
# found.
COMPLETE_CONTROL_REQUESTS = """
WITH locked AS (
    SELECT request_id FROM control_requests
    WHERE request_id = ANY($1::text[])
    ORDER BY request_id
    FOR NO KEY UPDATE
)
UPDATE control_requests AS c
SET outcome = u.outcome, detail = u.detail, completed_at = u.completed_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
     AS u(request_id, outcome, detail, completed_at)
WHERE c.request_id = u.request_id AND c.request_id IN (SELECT request_id FROM locked)
RETURNING c.request_id
"""

# The append-only rows of a commit in one statement: risk events ($1..$8), snapshots
# ($9..$17) and outbox events ($18..$23) by id (a replay is skipped), and the report
# cursor ($24 name, NULL for none; $25 seq; never moves back). Outbox rows draw their seq
# in the arrays' order, which is each execution's event order.
INSERT_HISTORY = """
WITH risk AS (
    INSERT INTO risk_events (
        event_id, execution_id, event_type, severity, description, action_taken, details,
        occurred_at)
    SELECT u.event_id, u.execution_id, u.event_type, u.severity, u.description,
        u.action_taken, u.details::jsonb, u.occurred_at
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::timestamptz[])
         AS u(event_id, execution_id, event_type, severity, description, action_taken,
              details, occurred_at)
    ON CONFLICT (event_id) DO NOTHING
), snapshots AS (
    INSERT INTO position_snapshots (
        snapshot_id, execution_id, taken_at, positions, total_value, total_pnl,
        unrealized_pnl, realized_pnl, cash)
    SELECT u.snapshot_id, u.execution_id, u.taken_at, u.positions::jsonb, u.total_value,
        u.total_pnl, u.unrealized_pnl, u.realized_pnl, u.cash
    FROM unnest($9::uuid[], $10::uuid[], $11::timestamptz[], $12::text[], $13::numeric[],
                $14::numeric[], $15::numeric[], $16::numeric[], $17::numeric[])
         AS u(snapshot_id, execution_id, taken_at, positions, total_value, total_pnl,
              unrealized_pnl, realized_pnl, cash)
    ON CONFLICT (snapshot_id) DO NOTHING
), outbox AS (
    INSERT INTO event_outbox (event_id, execution_id, user_id, key, event_type, payload)
    SELECT u.event_id, u.execution_id, u.user_id, u.key, u.event_type, u.payload::json
    FROM unnest($18::uuid[], $19::uuid[], $20::uuid[], $21::text[], $22::text[],
                $23::text[])
         WITH ORDINALITY
         AS u(event_id, execution_id, user_id, key, event_type, payload, ord)
    ORDER BY u.ord
    ON CONFLICT (event_id) DO NOTHING
), report_cursor AS (
    INSERT INTO oms_report_cursor (name, last_seq)
    SELECT $24::text, $25::bigint WHERE $24::text IS NOT NULL
    ON CONFLICT (name) DO UPDATE
    SET last_seq = GREATEST(oms_report_cursor.last_seq, EXCLUDED.last_seq), updated_at = now()
)
SELECT 1
"""

# Quiet ticks whose fence and version held (rows locked by LOCK_EXECUTIONS): valuation
# only (no version bump), with their snapshots, in one statement.
RECORD_MARKS = """
WITH marked AS (
    UPDATE strategy_executions AS e
    SET unrealized_pnl = u.unrealized_pnl, total_pnl = u.total_pnl,
        ledger_exposure = COALESCE(u.ledger_exposure, e.ledger_exposure),
        positions = CASE WHEN u.marks IS NULL THEN e.positions
                         ELSE jsonb_set(e.positions, '{marks}', u.marks::jsonb) END,
        updated_at = now()
    FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::numeric[],
                $6::numeric[], $16::numeric[], $17::text[])
         AS u(execution_id, owner_id, lease_epoch, version, unrealized_pnl, total_pnl,
              ledger_exposure, marks)
    WHERE e.execution_id = u.execution_id
      AND e.owner_id = u.owner_id AND e.lease_epoch = u.lease_epoch
      AND e.state_version = u.version
    RETURNING e.execution_id
), snapshots AS (
    INSERT INTO position_snapshots (
        snapshot_id, execution_id, taken_at, positions, total_value, total_pnl,
        unrealized_pnl, realized_pnl, cash)
    SELECT s.snapshot_id, s.execution_id, s.taken_at, s.positions::jsonb, s.total_value,
        s.total_pnl, s.unrealized_pnl, s.realized_pnl, s.cash
    FROM unnest($7::uuid[], $8::uuid[], $9::timestamptz[], $10::text[], $11::numeric[],
                $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[])
         AS s(snapshot_id, execution_id, taken_at, positions, total_value, total_pnl,
              unrealized_pnl, realized_pnl, cash)
    ON CONFLICT (snapshot_id) DO NOTHING
)
SELECT execution_id FROM marked
"""

# --- reads --------------------------------------------------------------------------

EXISTING_EXECUTIONS = """
SELECT execution_id FROM strategy_executions WHERE execution_id = ANY($1::uuid[])
"""

GET_EXECUTION = "SELECT * FROM strategy_executions WHERE execution_id = $1"

GET_EXECUTIONS = "SELECT * FROM strategy_executions WHERE execution_id = ANY($1::uuid[])"

# $2: the running statuses. Served by strategy_executions_message_key (strategy_id, ...);
# should a strategy have two running executions, the latest approved one is named.
RUNNING_STRATEGIES = """
SELECT DISTINCT ON (strategy_id) strategy_id, execution_id FROM strategy_executions
WHERE strategy_id = ANY($1::uuid[]) AND status = ANY($2::text[])
ORDER BY strategy_id, approved_at DESC, execution_id
"""

FLEET_PNL = "SELECT COALESCE(sum(total_pnl), 0) FROM strategy_executions"

GET_ORDERS = "SELECT * FROM execution_orders WHERE execution_id = $1 ORDER BY intent_seq"

GET_ORDERS_OF = """
SELECT * FROM execution_orders WHERE execution_id = ANY($1::uuid[])
ORDER BY execution_id, intent_seq
"""

# In the order they happened; ties (one timestamp) by report sequence, then by key.
GET_FILLS = """
SELECT f.* FROM execution_fills AS f
JOIN execution_orders AS o ON o.client_order_id = f.client_order_id
WHERE o.execution_id = $1
ORDER BY f.filled_at, f.oms_seq NULLS LAST, f.client_order_id, f.fill_id
"""

GET_FILLS_OF = """
SELECT f.*, o.execution_id FROM execution_fills AS f
JOIN execution_orders AS o ON o.client_order_id = f.client_order_id
WHERE o.execution_id = ANY($1::uuid[])
ORDER BY f.filled_at, f.oms_seq NULLS LAST, f.client_order_id, f.fill_id
"""

GET_SNAPSHOTS = """
SELECT * FROM position_snapshots WHERE execution_id = $1
ORDER BY taken_at DESC, snapshot_id
LIMIT $2
"""

GET_RISK_EVENTS = """
SELECT * FROM risk_events WHERE execution_id = $1 ORDER BY occurred_at, event_id
"""

# --- leases -------------------------------------------------------------------------

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

# --- control requests and the report cursor -----------------------------------------

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

# --- the outbox (outbox.py) -----------------------------------------------------------

# Session-level: held for as long as the leader's dedicated connection lives.
TRY_OUTBOX_LEADERSHIP = "SELECT pg_try_advisory_lock($1)"

# Served by event_outbox_unpublished_idx.
CLAIM_OUTBOX = """
SELECT seq, event_id, execution_id, user_id, key, event_type, payload::text AS payload,
    created_at
FROM event_outbox
WHERE published_seq IS NULL
ORDER BY seq
LIMIT $1
"""

# Numbers the given, still unpublished seqs in the given order after the highest
# published_seq (the UNIQUE index makes max() one index probe); returns every given seq
# with whether it exists at all (read before the update: an unknown seq is a caller bug).
MARK_PUBLISHED = """
WITH u AS (
    SELECT * FROM unnest($1::bigint[]) WITH ORDINALITY AS u(seq, ord)
), todo AS (
    SELECT o.seq, row_number() OVER (ORDER BY u.ord) AS n
    FROM u JOIN event_outbox AS o ON o.seq = u.seq
    WHERE o.published_seq IS NULL
), top AS (
    SELECT COALESCE(max(published_seq), 0) AS top_seq FROM event_outbox
), marked AS (
    UPDATE event_outbox AS o SET published_seq = top.top_seq + todo.n, published_at = now()
    FROM todo, top
    WHERE o.seq = todo.seq
    RETURNING o.seq
)
SELECT u.seq, EXISTS (SELECT 1 FROM event_outbox AS o WHERE o.seq = u.seq) AS known
FROM u
"""

# Published before $1, oldest first, at most $2; never the highest published_seq (the
# numbering continues from it). SKIP LOCKED: concurrent pruners never wait on each other.
PRUNE_OUTBOX = """
WITH doomed AS (
    SELECT seq FROM event_outbox
    WHERE published_at < $1
      AND published_seq < (SELECT max(published_seq) FROM event_outbox)
    ORDER BY published_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM event_outbox WHERE seq IN (SELECT seq FROM doomed) RETURNING 1
)
SELECT count(*) FROM deleted
"""

# --- the risk ledger ------------------------------------------------------------------

# Move totals by the given amounts (rows in (scope, key) order: the lock order) and return
# them as they stand after: a commit with new buys checks them against its caps in the same
# transaction, so the reservation and the check cannot be separated by another commit.
MOVE_LEDGER = """
INSERT INTO risk_ledger AS l (scope, scope_key, exposure)
SELECT u.scope, u.scope_key, u.delta
FROM unnest($1::text[], $2::text[], $3::numeric[]) WITH ORDINALITY
     AS u(scope, scope_key, delta, ord)
ORDER BY u.ord
ON CONFLICT (scope, scope_key) DO UPDATE
    SET exposure = l.exposure + EXCLUDED.exposure, updated_at = now()
RETURNING scope, scope_key, exposure
"""

LEDGER_TOTALS = """
SELECT scope, scope_key, exposure FROM risk_ledger
WHERE scope = 'fleet' OR scope_key = ANY($1::text[])
"""

# The audit: every running execution's exposure from its stored state (positions at the
# state's marks, else the last fill price), its live buys and its buys waiting for a rate
# token, and what the ledger holds.
LEDGER_RECOMPUTED = """
SELECT e.execution_id, e.user_id, e.ledger_exposure,
    CASE WHEN e.status IN ('active', 'paused') THEN
        COALESCE((
            SELECT sum((p.value->>'quantity')::numeric * COALESCE(
                (e.positions->'marks'->>p.key)::numeric, (p.value->>'last_price')::numeric))
            FROM jsonb_each(COALESCE(e.positions->'positions', '{}'::jsonb)) AS p
        ), 0) + COALESCE((
            SELECT sum((o.quantity - o.filled_quantity) * o.price)
            FROM execution_orders AS o
            WHERE o.execution_id = e.execution_id AND o.side = 'BUY'
              AND o.status IN ('PENDING', 'ACCEPTED', 'PARTIALLY_FILLED')
        ), 0) + COALESCE((
            SELECT sum((d.value->>'quantity')::numeric * (d.value->>'price')::numeric)
            FROM jsonb_array_elements(
                COALESCE(e.positions->'runtime'->'deferred', '[]'::jsonb)) AS d
            WHERE d.value->>'side' = 'BUY'
        ), 0)
    ELSE 0 END AS recomputed
FROM strategy_executions AS e
ORDER BY e.execution_id
"""

AUDIT_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('strategy_worker.ledger_audit'))"

REPAIR_EXPOSURES = """
UPDATE strategy_executions AS e SET ledger_exposure = u.exposure
FROM unnest($1::uuid[], $2::numeric[]) AS u(execution_id, exposure)
WHERE e.execution_id = u.execution_id
"""

SET_LEDGER = """
INSERT INTO risk_ledger AS l (scope, scope_key, exposure)
SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[])
ON CONFLICT (scope, scope_key) DO UPDATE SET exposure = EXCLUDED.exposure, updated_at = now()
"""

CLEAR_OTHER_USERS = """
UPDATE risk_ledger SET exposure = 0, updated_at = now()
WHERE scope = 'user' AND NOT (scope_key = ANY($1::text[])) AND exposure <> 0
"""
