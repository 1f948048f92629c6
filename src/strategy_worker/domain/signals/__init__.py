"""Market bars, indicators and entry/exit signals: pure, deterministic, no I/O, no clock.

- `timeframes`: `Timeframe` (`1m` ... `1w`) and the alignment of bar starts;
- `bars`: the `Bar` value and its validation;
- `builder`: `BarBuilder`, price ticks -> closed bars of each timeframe;
- `acceptance`: `BarGate`, what happens to duplicate, corrected, late and unclosed bars;
- `indicators`: the supported indicators (talipp, incremental) and their warm-ups;
- `rules`: the entry/exit rule grammar, its parser (explicit form and shorthand) and JSON;
- `engine`: `SignalEngine`, one execution's rules over its symbols' closed bars;
- `decisions`: what an evaluation decided (`SignalDecision`) and what blocked it (`Gate`).

This package initialiser imports nothing on purpose: `domain/strategy.py` imports `rules`,
and `bars` imports `domain/strategy.py` (the symbol pattern), so eager re-exports here would
make a cycle. Import from the modules.
"""
