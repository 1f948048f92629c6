"""The whole access matrix: every endpoint x (no token, bad signature, expired, another user,
the owner, an operator), against the real PostgreSQL and Kafka."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from strategy_worker.auth.tokens import issue_token

from .conftest import OPERATOR, OTHER, OWNER, Http, Seeded, Tokens

# (method, path, body); {e} is OWNER's running execution.
EXECUTION_ENDPOINTS = [
    ("GET", "/api/v1/executions/{e}", None),
    ("GET", "/api/v1/executions/{e}/orders", None),
    ("GET", "/api/v1/executions/{e}/fills", None),
    ("GET", "/api/v1/executions/{e}/risk-events", None),
    ("GET", "/api/v1/executions/{e}/decisions", None),
    ("GET", "/api/v1/executions/{e}/equity", None),
    ("GET", "/api/v1/executions/{e}/performance", None),
    ("GET", "/api/v1/executions/{e}/chart?symbol=AAPL", None),
    ("POST", "/api/v1/executions/{e}/pause", {}),
    ("POST", "/api/v1/executions/{e}/resume", {}),
    ("POST", "/api/v1/executions/{e}/stop", {}),
]
GLOBAL_ENDPOINTS = [
    ("GET", "/api/v1/me", None),
    ("GET", "/api/v1/executions", None),
    ("POST", "/api/v1/kill-switch", {"scope": "all", "mode": "reduce_only"}),
]


def bad_tokens(tokens: Tokens) -> dict[str, str | None]:
    forged = issue_token(
        user_id=OWNER,
        operator=True,
        key=ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        now=datetime.now(UTC),
        ttl_s=600,
    )
    return {"none": None, "bad_signature": forged, "expired": tokens(OWNER, ttl=-120)}


ALL = EXECUTION_ENDPOINTS + GLOBAL_ENDPOINTS


@pytest.mark.parametrize(("method", "path", "body"), ALL)
async def test_no_bad_or_expired_token_is_401_everywhere(
    http: Http, seeded: Seeded, tokens: Tokens, method: str, path: str, body: object
) -> None:
    for name, token in bad_tokens(tokens).items():
        status, answer = await http.call(method, path.format(e=seeded.own), token=token, body=body)

        assert status == 401, (name, answer)
        assert seeded.own.hex not in str(answer)


@pytest.mark.parametrize(("method", "path", "body"), EXECUTION_ENDPOINTS)
async def test_another_users_execution_is_404_like_one_that_does_not_exist(
    http: Http, seeded: Seeded, tokens: Tokens, method: str, path: str, body: object
) -> None:
    theirs = await http.call(method, path.format(e=seeded.own), token=tokens(OTHER), body=body)
    missing = await http.call(method, path.format(e=uuid.uuid4()), token=tokens(OTHER), body=body)

    assert theirs == missing
    assert theirs[0] == 404


@pytest.mark.parametrize(("method", "path", "body"), EXECUTION_ENDPOINTS)
async def test_the_owner_and_an_operator_reach_every_execution_endpoint(
    http: Http, seeded: Seeded, tokens: Tokens, method: str, path: str, body: object
) -> None:
    expected = 202 if method == "POST" else 200
    for token in (tokens(OWNER), tokens(OPERATOR, operator=True)):
        status, answer = await http.call(method, path.format(e=seeded.own), token=token, body=body)

        assert status == expected, answer


async def test_listing_shows_only_the_callers_executions_and_operators_all(
    http: Http, seeded: Seeded, tokens: Tokens
) -> None:
    def ids(answer: dict[str, list[dict[str, str]]]) -> set[str]:
        return {e["execution_id"] for e in answer["executions"]}

    _, mine = await http.call("GET", "/api/v1/executions", token=tokens(OWNER))
    _, theirs = await http.call("GET", "/api/v1/executions", token=tokens(OTHER))
    _, everyone = await http.call(
        "GET", "/api/v1/executions", token=tokens(OPERATOR, operator=True)
    )
    _, active = await http.call("GET", "/api/v1/executions?status=active", token=tokens(OWNER))

    assert ids(mine) == {str(seeded.own), str(seeded.own_stopped)}
    assert ids(theirs) == {str(seeded.others)}
    assert ids(everyone) == {str(seeded.own), str(seeded.own_stopped), str(seeded.others)}
    assert ids(active) == {str(seeded.own)}


async def test_paging_walks_every_execution_once(
    http: Http, seeded: Seeded, tokens: Tokens
) -> None:
    operator = tokens(OPERATOR, operator=True)
    seen: list[str] = []
    path = "/api/v1/executions?limit=1"
    while True:
        status, page = await http.call("GET", path, token=operator)
        assert status == 200
        seen += [e["execution_id"] for e in page["executions"]]
        if page["next_page_token"] is None:
            break
        path = f"/api/v1/executions?limit=1&page_token={page['next_page_token']}"

    assert sorted(seen) == sorted({str(seeded.own), str(seeded.own_stopped), str(seeded.others)})


async def test_the_kill_switch_is_for_operators_only(http: Http, tokens: Tokens) -> None:
    body = {"scope": "all", "mode": "reduce_only"}

    assert (await http.call("POST", "/api/v1/kill-switch", token=tokens(OWNER), body=body))[
        0
    ] == 403
    assert (await http.call("POST", "/api/v1/kill-switch", token=tokens(OTHER), body=body))[
        0
    ] == 403


async def test_a_control_request_is_visible_to_its_requester_and_operators_only(
    http: Http, seeded: Seeded, tokens: Tokens
) -> None:
    _, accepted = await http.call(
        "POST", f"/api/v1/executions/{seeded.own}/pause", token=tokens(OWNER), body={}
    )
    path = accepted["status_url"]

    assert (await http.call("GET", path, token=None))[0] == 401
    assert (await http.call("GET", path, token=tokens(OTHER)))[0] == 404
    assert (await http.call("GET", path, token=tokens(OWNER)))[0] == 200
    assert (await http.call("GET", path, token=tokens(OPERATOR, operator=True)))[0] == 200


async def test_reads_carry_exact_money_and_the_figures_of_the_books(
    http: Http, seeded: Seeded, tokens: Tokens
) -> None:
    _, detail = await http.call("GET", f"/api/v1/executions/{seeded.own}", token=tokens(OWNER))
    _, perf = await http.call(
        "GET", f"/api/v1/executions/{seeded.own}/performance", token=tokens(OWNER)
    )
    _, decisions = await http.call(
        "GET", f"/api/v1/executions/{seeded.own}/decisions", token=tokens(OWNER)
    )

    (aapl,) = detail["positions"]
    assert aapl["mark"] == Decimal("175.50")  # no price source: the last fill
    assert aapl["stop_level"] == Decimal("166.7250")  # 175.50 x (1 - 0.05)
    assert detail["limits"]["stop_loss_pct"] == Decimal("0.05")
    # Bought 110 @ 175.50, sold 10 @ 175.40: realized -1.00 exactly.
    (by_symbol,) = perf["by_symbol"]
    assert by_symbol["realized_pnl"] == Decimal("-1.0000")
    assert perf["max_drawdown"] < 0
    # signal_decisions exists (migration 004); this allocation-only strategy decided nothing.
    assert decisions == {"available": True, "decisions": []}


async def test_openapi_is_served_without_a_token(http: Http) -> None:
    status, doc = await http.call("GET", "/api/v1/openapi.json")

    assert status == 200
    assert "/api/v1/executions/{execution_id}/pause" in doc["paths"]
