"""The results of bench/run.py as a plain-text table, with each pipeline figure next to the
baseline that bounds it and the issue's target. Tolerates missing sections (--only)."""

from __future__ import annotations

from typing import Any

TARGET_STREAM_RATIO = 1.0
"""Issue 17: end-to-end orders/s at least the raw per-order gRPC stream of the same run."""
TARGET_FIRST_ORDER_P99_MS = 25
TARGET_STORM_FIRST_MS = 50
TARGET_STORM_LAST_MS = 10_000
TARGET_STOP_P99_MS = 50
TARGET_CPU_CORES = 1.0
TARGET_RSS_GIB = 2.0


def _get(data: dict[str, Any], *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}" if not digits else f"{value:,.{digits}f}"
    return str(value)


def _ratio(value: Any, base: Any) -> str:
    if not value or not base:
        return "-"
    ratio = value / base
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.4f}x"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def _lag_rows(add: Any, section: dict[str, Any]) -> None:
    """The event-loop lag and the garbage collections of a phase's measured window."""
    lag = section.get("event_loop_lag") or {}
    if lag.get("samples"):
        share = _num(lag.get("share_over_10ms", 0) * 100, 1)
        add(
            "  event-loop lag p50/p99 ms (50 ms samples)",
            f"{_num(lag.get('p50_ms'), 2)} / {_num(lag.get('p99_ms'), 2)}",
            f"{lag.get('samples')} samples, {share}% > 10 ms",
        )
    stalls = section.get("stalls") or {}
    if stalls:
        top = list(stalls.items())[:4]
        add(
            "  loop stalls > 5 ms by cause (n, s, longest ms)",
            "",
            "; ".join(f"{k} {v['count']:.0f}/{v['seconds']:.2f}/{v['max_ms']:.0f}" for k, v in top),
        )
    gc_ = section.get("gc") or {}
    if gc_:
        add(
            "  GC collections gen0/1/2 (longest ms)",
            " / ".join(
                f"{_get(gc_, g, 'count')} ({_num(_get(gc_, g, 'max_ms'), 1)})"
                for g in ("gen0", "gen1", "gen2")
            ),
            "total "
            + _num(sum(_get(gc_, g, "total_ms") or 0 for g in ("gen0", "gen1", "gen2")), 0)
            + " ms",
        )


def render(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, value: str, vs: str = "", target: str = "") -> None:
        rows.append((name, value, vs, target))

    b = r.get("baselines") or {}
    pg, kafka, grpc = b.get("asyncpg") or {}, b.get("kafka") or {}, b.get("grpc") or {}
    if b:
        add("BASELINES", "", "", "")
        add("  asyncpg insert, 1 row/statement /s", _num(pg.get("single_row_inserts_per_s")))
        add("  asyncpg executemany (1k/tx) rows/s", _num(pg.get("executemany_inserts_per_s")))
        add("  asyncpg COPY (1k/batch) rows/s", _num(pg.get("copy_inserts_per_s")))
        add("  kafka consume 1 KiB msgs/s", _num(kafka.get("consume_per_s")))
        add("  kafka produce 1 KiB msgs/s (acks=all)", _num(kafka.get("produce_per_s")))
        add("  grpc unary, 1 in flight orders/s", _num(grpc.get("unary_1_per_s")))
        add("  grpc unary, 32 in flight orders/s", _num(grpc.get("unary_concurrent_per_s")))
        sc_ = grpc.get("stream_cpu_cores") or {}
        add(
            "  grpc stream, 32 in flight orders/s",
            _num(grpc.get("stream_per_s")),
            f"oms {_num(sc_.get('oms'), 2)} / client {_num(sc_.get('client'), 2)} cores",
        )
        add("  grpc stream, 1 in flight orders/s", _num(grpc.get("stream_1_per_s")))
        add("  grpc submit_many (shared stream, 6/call) /s", _num(grpc.get("submit_many_6_per_s")))
    gb = b.get("grpc_batched") or {}
    if gb:
        bc = gb.get("cpu_cores") or {}
        add(
            f"  grpc batched stream ({gb.get('batch')}/batch, {gb.get('window')} in flight) /s",
            _num(gb.get("per_s")),
            f"oms {_num(bc.get('oms'), 2)} / client {_num(bc.get('client'), 2)} cores",
        )

    stream = grpc.get("stream_per_s")
    t = r.get("throughput")
    if t:
        add("THROUGHPUT (backlog of strategies, worker in its own process)", "", "", "")
        if t.get("error"):
            add("  error", str(t["error"])[:60])
        ops = t.get("orders_per_s")
        add(
            "  orders/s end to end (initial, FILLED)",
            _num(ops),
            f"{_ratio(ops, stream)} of raw per-order stream",
            f">= {TARGET_STREAM_RATIO:.1f}x: "
            + _verdict(None if ops is None or not stream else ops / stream >= TARGET_STREAM_RATIO),
        )
        if gb.get("per_s"):
            add(
                "  ... vs the raw batched stream",
                _num(ops),
                f"{_ratio(ops, gb.get('per_s'))} of raw batched ({gb.get('batch')}/batch)",
            )
        if t.get("submit_batches"):
            add(
                "  submit batches / orders per batch",
                f"{t['submit_batches']} / {_num(t.get('orders', 0) / t['submit_batches'], 1)}",
            )
        sps = t.get("strategies_per_s")
        add(
            "  strategies/s end to end",
            _num(sps, 1),
            f"{_ratio(sps, kafka.get('consume_per_s'))} of kafka consume",
        )
        add(
            "  orders/s vs asyncpg executemany",
            _num(ops),
            f"{_ratio(ops, pg.get('executemany_inserts_per_s'))} of executemany",
        )
        add(
            "  strategies / orders / seconds",
            f"{t.get('strategies')} / {t.get('orders')} / {_num(t.get('seconds'), 2)}",
        )
        cores = t.get("cpu_cores") or {}
        if cores:
            add(
                "  CPU cores busy: worker/oms/pg/kafka/redis",
                " / ".join(
                    _num(cores.get(k), 2) for k in ("worker", "oms", "postgres", "kafka", "redis")
                ),
                f"machine {_num(cores.get('machine'), 2)} of 2",
            )
            ms = t.get("cpu_ms_per_order") or {}
            if ms:
                add(
                    "  CPU ms per order: worker/oms/pg/kafka",
                    " / ".join(_num(ms.get(k), 3) for k in ("worker", "oms", "postgres", "kafka")),
                    "raw stream: oms "
                    f"{_num(_get(grpc, 'stream_cpu_ms_per_order', 'oms'), 3)} / client "
                    f"{_num(_get(grpc, 'stream_cpu_ms_per_order', 'client'), 3)}",
                )
        _lag_rows(add, t)
    for name, lat in (r.get("latency") or {}).items():
        add(f"LATENCY publish -> first order at OMS ({name}, {lat.get('rate')}/s)", "", "", "")
        if lat.get("error"):
            add("  error", str(lat["error"])[:60])
        s = lat.get("publish_to_first_order") or {}
        add(
            f"  at {_num(lat.get('achieved_rate'), 1)} strategies/s p50/p99/max ms",
            f"{_num(s.get('p50_ms'), 1)} / {_num(s.get('p99_ms'), 1)} / {_num(s.get('max_ms'), 1)}",
            f"grpc unary p50 {_num(_get(grpc, 'unary_1_latency', 'p50_ms'), 2)} ms",
            f"p99 < {TARGET_FIRST_ORDER_P99_MS} ms: "
            + _verdict(None if "p99_ms" not in s else s["p99_ms"] < TARGET_FIRST_ORDER_P99_MS),
        )
        cores = lat.get("cpu_cores_while_publishing") or {}
        if cores:
            add(
                "  CPU cores busy: worker/oms/pg/kafka/redis",
                " / ".join(
                    _num(cores.get(k), 2) for k in ("worker", "oms", "postgres", "kafka", "redis")
                ),
                f"machine {_num(cores.get('machine'), 2)} of 2",
            )
        for stage, label in (
            ("stage_publish_to_execution_started", "  stage: publish -> worker plans (p50/p99)"),
            ("stage_execution_started_to_first_order", "  stage: plans -> first order (p50/p99)"),
        ):
            st = lat.get(stage) or {}
            if st:
                add(label, f"{_num(st.get('p50_ms'), 1)} / {_num(st.get('p99_ms'), 1)}")
        s = lat.get("publish_to_last_initial_order") or {}
        if s:
            add(
                "  publish -> last initial order p50/p99 ms",
                f"{_num(s.get('p50_ms'), 1)} / {_num(s.get('p99_ms'), 1)}",
            )
        _lag_rows(add, lat)
    st = r.get("storm")
    if st:
        add(
            f"STOP-LOSS STORM {st.get('executions')} executions x 5 symbols, one price update",
            "",
            "",
            "",
        )
        if st.get("error"):
            add("  error", str(st["error"])[:60])
        first, last = st.get("first_close_ms"), st.get("last_close_ms")
        add(
            "  price write -> first closing order at OMS ms",
            _num(first, 1),
            "",
            f"< {TARGET_STORM_FIRST_MS} ms: "
            + _verdict(None if first is None else first < TARGET_STORM_FIRST_MS),
        )
        add(
            "  price write -> last closing order at OMS ms",
            _num(last, 1),
            f"{st.get('closes_at_oms')}/{st.get('positions')} closes, "
            f"{_num(st.get('closes_per_s'))}/s",
            f"< {TARGET_STORM_LAST_MS / 1000:g} s: "
            + _verdict(None if last is None else last < TARGET_STORM_LAST_MS),
        )
        add(
            "  closes durable (intent row) / at OMS",
            f"{st.get('closes_durable_first')} / {st.get('closes_at_oms')}",
            f"{st.get('submit_batches')} batches",
        )
        cores = st.get("cpu_cores") or {}
        if cores:
            add(
                "  CPU cores busy: worker/oms/pg/kafka/redis",
                " / ".join(
                    _num(cores.get(k), 2) for k in ("worker", "oms", "postgres", "kafka", "redis")
                ),
                f"machine {_num(cores.get('machine'), 2)} of 2",
            )
        _lag_rows(add, st)
    for name, sl in (r.get("stoploss") or {}).items():
        add(f"STOP-LOSS price write -> close order at OMS ({name})", "", "", "")
        if sl.get("error"):
            add("  error", str(sl["error"])[:60])
        s = sl.get("price_to_close_order") or {}
        add(
            "  p50/p99/max ms",
            f"{_num(s.get('p50_ms'), 1)} / {_num(s.get('p99_ms'), 1)} / {_num(s.get('max_ms'), 1)}",
            f"{sl.get('triggered', 0)}/{sl.get('triggers', 0)} triggered",
            f"p99 < {TARGET_STOP_P99_MS} ms: "
            + _verdict(None if "p99_ms" not in s else s["p99_ms"] < TARGET_STOP_P99_MS),
        )
    sc = r.get("scale")
    if sc:
        k = sc.get("executions")
        add(f"SCALE {k} executions x 5 symbols (monitor every {sc.get('cadence_s')} s)", "", "", "")
        if sc.get("error"):
            add("  error", str(sc["error"])[:60])
        add("  RSS per 1,000 executions MiB", _num(sc.get("rss_mib_per_1000"), 1))
        add(
            "  RSS total MiB",
            _num(sc.get("rss_mib_total"), 1),
            f"projected 10k: {_num(sc.get('rss_gib_projected_10k'), 2)} GiB",
            f"< {TARGET_RSS_GIB} GiB: "
            + _verdict(
                None
                if sc.get("rss_gib_projected_10k") is None
                else sc["rss_gib_projected_10k"] < TARGET_RSS_GIB
            ),
        )
        m = sc.get("monitor_cycle") or {}
        add(
            "  monitor_cycle wall s / CPU s",
            f"{_num(m.get('wall_s'), 3)} / {_num(m.get('cpu_s'), 3)}",
            f"{_num(sc.get('cpu_s_per_1000_per_cycle'), 3)} CPU s per 1k",
        )
        add("  snapshot rows/s (insert_snapshots)", _num(sc.get("snapshot_rows_per_s")))
        for cycle in ("reconcile_cycle", "lease_cycle"):
            wall, cpu = _get(sc, cycle, "wall_s"), _get(sc, cycle, "cpu_s")
            add(f"  {cycle} wall s / CPU s", f"{_num(wall, 3)} / {_num(cpu, 3)}")
            if _get(sc, cycle, "unfinished"):
                add("    unfinished", "", str(_get(sc, cycle, "unfinished")))
        add("  idle CPU cores (measured window)", _num(sc.get("idle_cpu_cores"), 3))
        proj = sc.get("cpu_cores_projected")
        add(
            "  avg CPU cores at cadence (projected)",
            _num(proj, 3),
            f"10k: {_num(sc.get('cpu_cores_projected_10k'), 3)}",
            f"< {TARGET_CPU_CORES} core: "
            + _verdict(
                None
                if sc.get("cpu_cores_projected_10k") is None
                else sc["cpu_cores_projected_10k"] < TARGET_CPU_CORES
            ),
        )
        add("  create executions/s (handle_strategy)", _num(sc.get("create_per_s"), 1))
        for label, key in (
            ("  calls per execution, to filled", "calls_per_execution_to_filled"),
            ("  calls per monitor cycle", "calls_per_monitor_cycle"),
        ):
            counts = sc.get(key) or {}
            if counts:
                add(label, "", "", "")
                for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                    add(f"    {name}", _num(n, 2))

    width = max((len(row[0]) for row in rows), default=10)
    lines = [
        f"Strategy Worker benchmarks ({r.get('mode')}, {r.get('machine', {}).get('cpus')} CPUs, "
        f"git {str(r.get('git', {}).get('commit', ''))[:10]}"
        f"{' +dirty src' if r.get('git', {}).get('dirty') else ''}, "
        f"{r.get('wall_seconds', '?')} s)",
        "PostgreSQL commits: "
        + ", ".join(f"{k}={v}" for k, v in (r.get("postgres_settings") or {}).items()),
        f"{'figure':<{width}}  {'value':>22}  {'vs baseline':<28}  target",
    ]
    for name, value, vs, target in rows:
        if not value and not vs and not target:
            lines.append(name)
        else:
            lines.append(f"{name:<{width}}  {value:>22}  {vs:<28}  {target}")
    return "\n".join(lines)
