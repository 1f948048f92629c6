"""`strategy-worker api`: the REST + WebSocket API and the live dashboard (docs/api.md).

Its own process: reads PostgreSQL with its own queries (`reads`), follows the execution
events (`followers`: Kafka or the outbox) through one hub (`stream`), publishes signed control
requests once per request id (`controls`), and serves the routes and the dashboard (`app`).
`server` wires it: `api_service` (the one wiring), `run_api` (the command) and
`serve_dashboard` (paper mode, in-process, with a development token).
"""

from strategy_worker.api.controls import ControlSink, DirectControlSink, KafkaControlSink
from strategy_worker.api.followers import EventFollower, KafkaFollower, OutboxFollower
from strategy_worker.api.server import Dashboard, RunningApi, api_service, run_api, serve_dashboard

__all__ = [
    "ControlSink",
    "Dashboard",
    "DirectControlSink",
    "EventFollower",
    "KafkaControlSink",
    "KafkaFollower",
    "OutboxFollower",
    "RunningApi",
    "api_service",
    "run_api",
    "serve_dashboard",
]
