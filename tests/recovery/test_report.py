"""The recovery report through the registered HTTP function: a seeded run with a known true lift is
recovered within the report's confidence interval; bad query parameters are named."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sandbox.recovery import LiftScenario, TrackedCartView, place_orders
from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry, totals
from shared.recovery.report import two_proportion_lift
from shared.runtime import Runtime
from tests.notify.conftest import NOW, RecordingProvider
from tests.recovery.conftest import Clock, bulk_carts, notify_all, report, track, tracked, window

SCENARIO = LiftScenario(baseline=0.12, mailed=0.18, store_share=0.3, other_products_share=0.25, seed=10)


@pytest.fixture
def notify_overrides() -> dict[str, Any]:
    return {"holdout_percent": 50}


async def test_the_report_recovers_the_configured_lift_within_its_confidence_interval(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    recorder: RecordingProvider,
    sandbox: Sandbox,
    clock: Clock,
    telemetry: LocalTelemetry,
) -> None:
    carts = bulk_carts(sandbox, 600)
    await notify_all(registered_functions, runtime, carts)
    records = await tracked(runtime)
    views = [
        TrackedCartView(t.customer_id, t.oun, tuple(t.product_ids), t.group == "mailed", t.enrolled_at)
        for t in records
    ]
    placed = place_orders(sandbox.data, views, SCENARIO, timedelta(days=7))
    await track(registered_functions, clock, NOW + timedelta(days=3))
    await track(registered_functions, clock, NOW + timedelta(days=8))

    code, body = await report(registered_functions, **window(2))
    assert code == 200 and body["complete"] is True
    mailed, held = body["groups"]["mailed"], body["groups"]["holdout"]
    assert mailed["carts"] + held["carts"] == 600 and mailed["openCarts"] == held["openCarts"] == 0
    assert mailed["carts"] == len(recorder.sent)
    assert mailed["converted"]["any"] + held["converted"]["any"] == len(placed)
    lift = body["lift"]["any"]
    expected = two_proportion_lift(
        mailed["converted"]["any"], mailed["carts"], held["converted"]["any"], held["carts"]
    )
    assert expected is not None and lift == expected.model_dump(mode="json", by_alias=True)
    assert lift["absoluteCi95"]["low"] <= SCENARIO.lift <= lift["absoluteCi95"]["high"]
    assert lift["absoluteCi95"]["low"] > 0  # 600 carts are enough to see this lift
    assert body["lift"]["strict"]["absolute"] < lift["absolute"] + 1e-9
    (usd,) = body["revenue"]
    assert usd["currency"] == "USD" and float(usd["incrementalRevenue"]) > 0
    mailed_orders = {
        o.sales_id for o in placed if o.customer_id in {v.customer_id for v in views if v.mailed}
    }
    assert float(usd["mailedRevenue"]) == pytest.approx(
        sum(float(o.total_amount) for o in placed if o.sales_id in mailed_orders), abs=0.01
    )
    assert {c["channel"] for c in body["byChannel"]} == {"online", "store"}
    assert mailed["medianHoursToConvert"] is not None

    # The same figures as metrics (the workbook's recovery tiles): settled carts and conversions per
    # group, revenue per currency, held-out carts among the notify outcomes.
    metrics = totals(telemetry.points())

    def summed(name: str, **match: str) -> float:
        return sum(
            value
            for (metric, dims), value in metrics.items()
            if metric == name and all(dict(dims).get(k) == v for k, v in match.items())
        )

    for group, figures in (("mailed", mailed), ("holdout", held)):
        assert summed("connector.recovery.settled", group=group) == figures["carts"]
        converted = summed("connector.recovery.settled", group=group, status="converted")
        assert converted == figures["converted"]["any"]
    assert summed("connector.recovery.conversions") == len(placed)
    assert summed("connector.recovery.revenue", group="mailed", currency="USD") == pytest.approx(
        float(usd["mailedRevenue"]), abs=0.01
    )
    assert summed("connector.notify.outcomes", outcome="held_out") == held["carts"]
    assert summed("connector.recovery.tracking_runs", status="ok") == 2

    # One channel only: the other channel has no carts at all.
    code, other = await report(registered_functions, oun="128", **window(2))
    assert code == 200 and other["groups"]["mailed"]["carts"] == mailed["carts"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),
        ({"oun": "999"}, "oun"),
        ({"to": "2026-03-01T10:00:00"}, "to"),
    ],
)
async def test_bad_query_parameters_answer_a_problem_naming_them(
    registered_functions: dict[str, Any], runtime: Runtime, params: dict[str, str], field: str
) -> None:
    code, body = await report(registered_functions, **params)
    assert code == 400
    assert [e["path"] for e in body["errors"]] == [field]
    assert body["status"] == 400 and body["correlationId"]


async def test_an_empty_range_answers_zeros(registered_functions: dict[str, Any], runtime: Runtime) -> None:
    code, body = await report(registered_functions)
    assert code == 200 and body["groups"]["mailed"]["carts"] == 0 and body["lift"]["any"] is None
    assert body["revenue"] == [] and body["complete"] is True
