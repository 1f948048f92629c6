"""Control requests carry a verifiable identity; operators have a kill switch (issue 15)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ed25519

from strategy_worker import messages as msg
from strategy_worker.auth import ControlSigner, ControlVerifier, Role
from strategy_worker.auth.keys import key_id
from strategy_worker.domain.orders import OrderStatus, Side
from strategy_worker.domain.risk.state import TradingState
from strategy_worker.store import ControlOutcome, ExecutionStatus
from strategy_worker.testing.rig import Rig

from .world import PRICES, USER, admit, approved, orders, risk_types, run

KEY = ed25519.Ed25519PrivateKey.generate()
SIGNER = ControlSigner(KEY, ttl_s=3600)
STRICT = ControlVerifier(keys={key_id(KEY.public_key()): KEY.public_key()}, require_signed=True)


def _request(execution_id: uuid.UUID, action: str, user: uuid.UUID = USER) -> msg.ControlRequest:
    return msg.ControlRequest(
        request_id=uuid.uuid4(),
        user_id=user,
        action=msg.ControlAction(action),
        timestamp=datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
        execution_id=execution_id,
    )


def _bytes(request: msg.ControlRequest) -> bytes:
    return msg.encode_json(msg.control_message(request)).encode()


def _signed(request: msg.ControlRequest, role: Role = Role.USER) -> bytes:
    return _bytes(SIGNER.sign(request, role=role, now=datetime(2024, 1, 2, 14, 30, tzinfo=UTC)))


def test_an_unsigned_request_copying_the_owner_s_user_id_is_refused_critically() -> None:
    # Today anyone who can write to strategy.control stops any execution by copying the
    # user_id every event publishes.
    async def scenario() -> None:
        rig = Rig(seed=31)
        rig.verifier = STRICT
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            forged = _request(execution, "stop")

            await app.worker.handle_control(_bytes(forged), "test")

            assert rig.db.executions[execution].record.state.status is ExecutionStatus.ACTIVE
            assert rig.db.controls[str(forged.request_id)].outcome is ControlOutcome.REFUSED
            rows = [
                r for r in rig.db.risk_events.values() if r.event_type == "UNAUTHORIZED_CONTROL"
            ]
            assert [r.severity.value for r in rows] == ["CRITICAL"]

            signed = _request(execution, "pause")
            await app.worker.handle_control(_signed(signed), "test")
            assert rig.db.executions[execution].record.state.status is ExecutionStatus.PAUSED

    run(scenario)


def test_a_token_signed_for_another_action_is_refused() -> None:
    async def scenario() -> None:
        rig = Rig(seed=32)
        rig.verifier = STRICT
        rig.set_prices(PRICES)
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            pause = SIGNER.sign(
                _request(execution, "pause"),
                role=Role.USER,
                now=datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
            )
            tampered = json.loads(_bytes(pause))
            tampered["action"] = "stop"

            await app.worker.handle_control(json.dumps(tampered).encode(), "test")

            assert rig.db.executions[execution].record.state.status is ExecutionStatus.ACTIVE
            assert "UNAUTHORIZED_CONTROL" in risk_types(rig, execution)

    run(scenario)


def test_an_operator_kill_switch_makes_an_execution_reduce_only_until_cleared() -> None:
    async def scenario() -> None:
        rig = Rig(seed=33)
        rig.verifier = STRICT
        rig.set_prices(PRICES)
        operator = uuid.uuid4()  # not the owner: the role is what allows it
        async with rig.worker("w1") as app:
            await app.start()
            (execution,) = await admit(app, approved({"AAPL": "0.3"}))
            await rig.run_for(2)

            await app.worker.handle_control(
                _signed(_request(execution, "reduce_only", operator), Role.OPERATOR), "test"
            )
            runner = app.worker.book.get(execution)
            assert runner is not None
            assert runner.model.risk.state is TradingState.REDUCING
            rig.set_prices({"MSFT": PRICES["MSFT"]})
            await app.worker.monitor.rebalance_cycle()  # would buy: refused while reduce-only
            await rig.run_for(2)
            assert [o.symbol for o in orders(rig, execution) if o.side is Side.BUY] == ["AAPL"]

            await app.worker.handle_control(
                _signed(_request(execution, "clear_reduce_only", operator), Role.OPERATOR),
                "test",
            )
            assert runner.model.risk.state is TradingState.ACTIVE
            assert all(o.status is OrderStatus.FILLED for o in orders(rig, execution))

    run(scenario)
