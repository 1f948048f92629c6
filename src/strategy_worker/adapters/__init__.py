"""Adapters: one module per outside system, each implementing a port from strategy_worker.ports."""
