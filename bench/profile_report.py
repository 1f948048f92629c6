"""Summarise a cProfile dump of the worker: own time per component (asyncpg, gRPC, Kafka,
JSON, logging, the worker's own code, the event loop) and the top functions.

    .venv/bin/python bench/profile_report.py bench/results/<tag>.pstats [--top 25]
"""

from __future__ import annotations

import argparse
import pstats
from typing import Any

# First match wins: (component, substring of the file path or function name).
_COMPONENTS = (
    ("asyncpg (PostgreSQL)", "asyncpg"),
    ("grpc (OMS client)", "grpc"),
    ("protobuf", "protobuf"),
    ("aiokafka (Kafka)", "aiokafka"),
    ("kafka murmur2/partitioner", "partitioner"),
    ("redis", "redis"),
    ("structlog / logging", "structlog"),
    ("structlog / logging", "logging"),
    ("json encode/decode", "json"),
    ("worker: messages (event JSON)", "strategy_worker/messages"),
    ("worker: postgres adapter", "strategy_worker/adapters/postgres"),
    ("worker: oms adapter + codec", "strategy_worker/adapters/oms_grpc"),
    ("worker: kafka adapter", "strategy_worker/adapters/kafka"),
    ("worker: domain", "strategy_worker/domain"),
    ("worker: runtime", "strategy_worker/runtime"),
    ("worker: other", "strategy_worker"),
    ("uuid", "uuid.py"),
    ("decimal / dataclasses / enum", "dataclasses"),
    ("decimal / dataclasses / enum", "enum.py"),
    ("asyncio event loop", "asyncio"),
    ("asyncio event loop", "uvloop"),
)


def _component(filename: str, function: str) -> str:
    key = f"{filename}:{function}"
    for name, needle in _COMPONENTS:
        if needle in key:
            return name
    if filename == "~":
        return "builtins (C)"
    return "other"


def summarise(path: str, top: int = 25) -> dict[str, Any]:
    stats = pstats.Stats(path)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-9
    by_component: dict[str, float] = {}
    rows = []
    for (filename, line, function), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        comp = _component(filename, function)
        by_component[comp] = by_component.get(comp, 0.0) + tottime
        rows.append(
            (tottime, ncalls, cumtime, f"{filename.split('site-packages/')[-1]}:{line}({function})")
        )
    rows.sort(reverse=True)
    return {
        "total_own_s": round(total, 3),
        "by_component": {
            k: {"s": round(v, 3), "share": round(v / total, 3)}
            for k, v in sorted(by_component.items(), key=lambda kv: -kv[1])
        },
        "top_functions": [
            {
                "own_s": round(t, 3),
                "calls": n,
                "cum_s": round(c, 3),
                "function": f.replace("/work/main/", ""),
            }
            for t, n, c, f in rows[:top]
        ],
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"worker profile: {summary['total_own_s']} s of own time (cProfile, main thread)"]
    lines.append("  by component:")
    for name, v in summary["by_component"].items():
        if v["share"] >= 0.005:
            lines.append(f"    {name:<34} {v['s']:>8.3f} s  {v['share'] * 100:5.1f}%")
    lines.append("  top functions by own time:")
    for row in summary["top_functions"]:
        lines.append(f"    {row['own_s']:>7.3f} s {row['calls']:>8} calls  {row['function'][:90]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(render(summarise(args.path, args.top)))


if __name__ == "__main__":
    main()
