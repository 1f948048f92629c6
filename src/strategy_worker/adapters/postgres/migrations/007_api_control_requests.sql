-- Strategy Worker schema, version 007: the API's record of the control requests it publishes.
--
-- Owned by `strategy-worker api` (never by the worker, which keeps its own control_requests):
-- a client may retry a control call with the same request_id; this row, inserted and locked
-- in the transaction that publishes to strategy.control, makes the publish happen once.
-- `fingerprint` is the request's meaning (action, target, user): the same id reused for
-- another meaning is refused (409) instead of silently answered with the first one.
-- `messages` lists the control messages published for it: one for an execution's action,
-- one per running execution for an operator's kill switch (request ids derived from this one).
CREATE TABLE api_control_requests (
    request_id        uuid        PRIMARY KEY,
    requested_by      uuid        NOT NULL,
    role              text        NOT NULL CHECK (role IN ('user', 'operator')),
    action            text        NOT NULL CHECK (action <> ''),
    scope             text        NOT NULL CHECK (scope IN ('execution', 'user', 'all')),
    execution_id      uuid,
    target_user_id    uuid,
    reason            text        NOT NULL DEFAULT '',
    fingerprint       text        NOT NULL,
    messages          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    published_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_control_requests_target_check
        CHECK ((scope = 'execution') = (execution_id IS NOT NULL))
);

CREATE INDEX api_control_requests_requester_idx
    ON api_control_requests (requested_by, created_at DESC);
CREATE INDEX api_control_requests_execution_idx
    ON api_control_requests (execution_id) WHERE execution_id IS NOT NULL;
