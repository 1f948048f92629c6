"""Pure, synchronous, deterministic trading rules: no I/O, no wall clock, no await."""
