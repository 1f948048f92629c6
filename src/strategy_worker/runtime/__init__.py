"""The running worker: execution lifecycle, ticks, wiring, startup and shutdown."""
