"""Hypothesis strategies for hostile `strategy.approved` payloads: every one must be refused.

Each example is (category, payload bytes). Most start from a valid message and break exactly
one thing, so validation deep inside the message is exercised, not only the JSON parser.
Numbers are spliced into the JSON text raw (`1e400`, `NaN`, 30-digit integers), which no
Python float could carry.

A well-formed symbol without a price is not hostile: since issue 12 (item 5) such a symbol is
skipped at intake with `PRICE_MISSING` and bought once priced, the strategy is not refused
(tests/integration/reliability/test_batch_intake.py covers it).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

VALID: dict[str, Any] = {
    "type": "strategy.approved",
    "strategy_id": "550e8400-e29b-41d4-a716-446655440000",
    "user_id": "660e8400-e29b-41d4-a716-446655440000",
    "timestamp": "2024-01-01T00:00:00Z",
    "config": {
        "name": "Hostile",
        "type": "MOMENTUM",
        "symbols": ["AAPL", "MSFT", "GOOGL"],
        "allocation": {"AAPL": 0.3, "MSFT": 0.3, "GOOGL": 0.3},
        "initial_capital": 100000.0,
        "risk_params": {"max_position_size": 0.3, "stop_loss_pct": 0.05, "max_daily_loss": 0.05},
    },
}
KNOWN_SYMBOLS = ("AAPL", "MSFT", "GOOGL")
OVERSIZE_LIMIT = 65536

REQUIRED = (
    ("type",),
    ("strategy_id",),
    ("user_id",),
    ("timestamp",),
    ("config",),
    ("config", "name"),
    ("config", "type"),
    ("config", "symbols"),
    ("config", "allocation"),
    ("config", "initial_capital"),
)
STRING_FIELDS = (
    ("type",),
    ("strategy_id",),
    ("user_id",),
    ("timestamp",),
    ("config", "name"),
    ("config", "type"),
)
NUMBER_FIELDS = (
    ("config", "initial_capital"),
    ("config", "allocation", "AAPL"),
    ("config", "risk_params", "max_position_size"),
    ("config", "risk_params", "stop_loss_pct"),
    ("config", "risk_params", "max_daily_loss"),
)
OBJECT_FIELDS = (("config",), ("config", "allocation"), ("config", "risk_params"))


class Raw:
    """A number spliced into the JSON text verbatim."""

    def __init__(self, text: str) -> None:
        self.text = text


def render(message: Any) -> bytes:
    raws: dict[str, str] = {}

    def default(value: object) -> object:
        if isinstance(value, Raw):
            marker = f"@@raw{len(raws)}@@"
            raws[marker] = value.text
            return marker
        raise TypeError(type(value).__name__)

    text = json.dumps(message, default=default)
    for marker, raw in raws.items():
        text = text.replace(f'"{marker}"', raw)
    return text.encode()


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=40).map(
    lambda n: f"S {n}"
)
"""Valid strategy names: they vary a message without making it invalid for another reason."""


def _named(draw: st.DrawFn, message: dict[str, Any]) -> dict[str, Any]:
    if isinstance(message.get("config"), dict) and "name" in message["config"]:
        current = message["config"]["name"]
        if current == VALID["config"]["name"]:
            return _set(message, ("config", "name"), draw(names))
    return message


def _set(message: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    out = copy.deepcopy(message)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _delete(message: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(message)
    node = out
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return out


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
not_a_string = (
    st.booleans()
    | st.integers()
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)
)
not_a_number = (
    st.text(max_size=12) | st.booleans() | st.lists(st.integers(), max_size=3)
) | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)
not_an_object = (
    st.text(max_size=10) | st.integers() | st.booleans() | st.lists(json_scalars, max_size=3)
)
huge_number = st.sampled_from(["1e13", "1e400", "9" * 30, "123456789012345678901234567890.5"]) | (
    st.integers(min_value=13, max_value=100_000).map(lambda e: f"1e{e}")
)
non_finite = st.sampled_from(["NaN", "Infinity", "-Infinity"])
non_positive = st.sampled_from(["0", "0.0", "-0", "-1", "-100000.00", "-1e400"]) | st.integers(
    max_value=0
).map(str)


@st.composite
def _bad_json(draw: st.DrawFn) -> tuple[str, bytes]:
    text = render(VALID)
    cut = draw(st.integers(min_value=1, max_value=len(text) - 1))
    return "bad_json", text[:cut]


@st.composite
def _wrong_type(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["string", "number", "object", "symbols"]))
    if kind == "string":
        path = draw(st.sampled_from(STRING_FIELDS))
        value = draw(not_a_string.filter(lambda v: v is not None))
    elif kind == "number":
        path = draw(st.sampled_from(NUMBER_FIELDS))
        value = draw(not_a_number)
    elif kind == "object":
        path = draw(st.sampled_from(OBJECT_FIELDS))
        value = draw(not_an_object)
    else:
        path = ("config", "symbols")
        value = draw(
            st.text(max_size=10)
            | st.integers()
            | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
        )
    return "wrong_type", render(_set(VALID, path, value))


@st.composite
def _missing_field(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(REQUIRED))
    message = _delete(VALID, path) if draw(st.booleans()) else _set(VALID, path, None)
    return "missing_field", render(_named(draw, message))


@st.composite
def _huge_number(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(NUMBER_FIELDS))
    return "huge_number", render(_named(draw, _set(VALID, path, Raw(draw(huge_number)))))


@st.composite
def _non_finite(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(NUMBER_FIELDS))
    return "nan_infinity", render(_named(draw, _set(VALID, path, Raw(draw(non_finite)))))


@st.composite
def _non_positive_capital(draw: st.DrawFn) -> tuple[str, bytes]:
    return "capital_not_positive", render(
        _set(VALID, ("config", "initial_capital"), Raw(draw(non_positive)))
    )


@st.composite
def _over_allocated(draw: st.DrawFn) -> tuple[str, bytes]:
    cents = draw(
        st.lists(st.integers(min_value=1, max_value=100), min_size=3, max_size=3).filter(
            lambda w: sum(w) > 100
        )
    )
    allocation = {s: Raw(f"{c / 100:.2f}") for s, c in zip(KNOWN_SYMBOLS, cents, strict=True)}
    if draw(st.booleans()):  # or one single weight above 100%
        allocation["AAPL"] = Raw(draw(st.sampled_from(["1.01", "1.5", "2", "100", "35"])))
    return "weights_over_100", render(_set(VALID, ("config", "allocation"), allocation))


@st.composite
def _invalid_symbol(draw: st.DrawFn) -> tuple[str, bytes]:
    symbol = draw(
        st.sampled_from(["", "aapl", "1ABC", "A" * 11, "AA PL", "DROP TABLE", "\u00c4BC"])
        | st.text(min_size=1, max_size=8).filter(lambda s: not s.isascii() or not s[:1].isupper())
    )
    message = _set(VALID, ("config", "symbols"), ["AAPL", symbol])
    return "invalid_symbol", render(
        _set(message, ("config", "allocation"), {"AAPL": 0.3, symbol: 0.3})
    )


@st.composite
def _oversized(draw: st.DrawFn) -> tuple[str, bytes]:
    size = draw(st.integers(min_value=OVERSIZE_LIMIT, max_value=4 * OVERSIZE_LIMIT))
    message = _set(VALID, ("config", "entry_rules"), {"padding": "x" * size})
    return "oversized", render(message)


@st.composite
def _bad_values(draw: st.DrawFn) -> tuple[str, bytes]:
    path, value = draw(
        st.sampled_from(
            [
                (("type",), "strategy.rejected"),
                (("strategy_id",), "not-a-uuid"),
                (("user_id",), "1234"),
                (("timestamp",), "yesterday"),
                (("timestamp",), "2024-01-01T00:00:00"),
                (("config", "type"), "YOLO"),
                (("config", "name"), ""),
                (("config", "name"), "n" * 201),
                (("config", "symbols"), []),
                (("config", "symbols"), ["AAPL", "AAPL", "MSFT"]),
                (("config", "allocation"), {"AAPL": 0.3}),
                (("config", "risk_params", "stop_loss_pct"), 0.9),
                (("config", "risk_params", "max_position_size"), 0),
            ]
        )
    )
    return "invalid_value", render(_named(draw, _set(VALID, path, value)))


def _random_bytes() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.binary(max_size=300).map(lambda b: ("random_bytes", b))


def _random_json() -> st.SearchStrategy[tuple[str, bytes]]:
    return json_values.map(lambda v: ("random_json", json.dumps(v).encode()))


def hostile_messages() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        _random_bytes(),
        _random_json(),
        _bad_json(),
        _wrong_type(),
        _missing_field(),
        _huge_number(),
        _non_finite(),
        _non_positive_capital(),
        _over_allocated(),
        _invalid_symbol(),
        _oversized(),
        _bad_values(),
    )


def generate(count: int, *, batch: int = 50) -> list[tuple[str, bytes]]:
    """`count` distinct hostile messages, the same ones on every run (derandomized). Drawn in
    lists of `batch` distinct ones: the engine's per-example overhead dwarfs one message."""
    seen: dict[bytes, str] = {}

    @settings(
        max_examples=4 * -(-count // batch),
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(st.lists(hostile_messages(), min_size=batch, max_size=batch, unique_by=lambda m: m[1]))
    def collect(examples: list[tuple[str, bytes]]) -> None:
        if len(seen) < count:
            seen.update((payload, category) for category, payload in examples)

    collect()
    return [(category, payload) for payload, category in seen.items()][:count]
