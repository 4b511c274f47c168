"""The generated data: deterministic from seed and instant, and varied enough to test against."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.data import SAME_INSTANT_BLOCK, SandboxData, format_datetime, parse_ticks, ticks, to_utc
from tests.sandbox.conftest import NOW


def snapshot(data: SandboxData) -> tuple[object, ...]:
    return (
        [c.wire() for c in data.carts.values()],
        [c.wire() for c in data.customers.values()],
        [p.wire(data.channels["128"]) for p in data.products.values()],
    )


def test_same_seed_and_instant_give_the_same_data() -> None:
    assert snapshot(SandboxData(seed=42, now=NOW)) == snapshot(SandboxData(seed=42, now=NOW))
    assert snapshot(SandboxData(seed=43, now=NOW)) != snapshot(SandboxData(seed=42, now=NOW))


def test_times_move_with_now_and_nothing_else() -> None:
    first = SandboxData(seed=42, now=NOW)
    later = SandboxData(seed=42, now=NOW + timedelta(days=1))
    for a, b in zip(first.carts.values(), later.carts.values(), strict=True):
        assert (a.id, b.modified_date_time - a.modified_date_time) == (b.id, timedelta(days=1))


def test_carts_cover_the_cases_detection_meets() -> None:
    data = SandboxData(seed=42, now=NOW)
    carts = list(data.carts.values())
    assert all(NOW - timedelta(days=3) <= c.modified_date_time <= NOW for c in carts)
    assert {c.channel_id for c in carts} == {5637144592, 5637144593}
    assert any(c.customer_id == "" for c in carts), "anonymous carts"
    assert any(not c.lines for c in carts), "empty carts"
    assert any(c.lines and not c.active_lines for c in carts), "carts whose lines are all voided"
    assert {c.cart_type_value for c in carts} == {1, 2, 3}
    assert any(c.cart_status_value == 3 for c in carts), "voided carts"
    per_customer = Counter(c.customer_id for c in carts if c.customer_id)
    assert max(per_customer.values()) > 3
    instants = Counter(c.modified_date_time for c in data.carts_in("128"))
    instant, count = instants.most_common(1)[0]
    assert count >= SAME_INSTANT_BLOCK >= 300 and instant == data.same_instant_block()
    recent = [c for c in data.carts_in("128") if c.modified_date_time >= NOW - timedelta(hours=23)]
    assert len(recent) > 150, "enough for detection in the default one-day window"


def test_customers_and_products_cover_consent_and_images() -> None:
    data = SandboxData(seed=42, now=NOW)
    customers = list(data.customers.values())
    assert 50 <= len(customers) <= 70
    assert any(c.opted_in_marketing for c in customers)
    assert any(c.email and not c.opted_in_marketing for c in customers)
    assert any(c.opt_out_personalization for c in customers)
    assert any(c.email is None for c in customers)
    assert all(c.email.endswith("@example.com") for c in customers if c.email)
    assert {c.language for c in customers} == {"en-us", "de-de"}
    products = list(data.products.values())
    assert 35 <= len(products) <= 45
    assert any(p.media and p.media[0].alt_text is None for p in products)
    assert any(not p.media for p in products)
    assert all(p.base_price.as_tuple().exponent == -2 for p in products)
    assert any(p.base_price % 1 for p in products), "prices with cents"


def test_helpers_refuse_unknown_carts_and_naive_times() -> None:
    data = SandboxData(seed=42, now=NOW)
    with pytest.raises(KeyError):
        data.touch_cart("no-such-cart", NOW)
    with pytest.raises(ValueError, match="naive"):
        to_utc(datetime(2026, 1, 1))
    cart = data.add_cart(oun="067", customer_id="004002", lines=[])
    assert cart.channel_id == 5637144593 and cart.lines == []
    with pytest.raises(ValueError, match="exists"):
        data.add_cart(cart_id=cart.id)


def test_a_share_of_the_carts_carries_seven_fraction_digits() -> None:
    """Retail Server writes .NET ticks: the sandbox does too, for a fixed share of its carts."""
    carts = SandboxData(seed=42, now=NOW).carts_in("128")
    digits = Counter(len(c.wire()["ModifiedDateTime"].rstrip("Z").partition(".")[2]) for c in carts)
    assert digits[7] >= len(carts) // 10
    assert digits[0] + digits[1] + digits[2] + digits[3] >= len(carts) // 2, "most stay at milliseconds"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00.1234567Z", (datetime(2026, 12, 1, 10, 0, 0, 123_456, tzinfo=UTC), 7)),
        ("2026-12-01T11:00:00.1234567+01:00", (datetime(2026, 12, 1, 10, 0, 0, 123_456, tzinfo=UTC), 7)),
        ("2026-12-01T10:00:00.12Z", (datetime(2026, 12, 1, 10, 0, 0, 120_000, tzinfo=UTC), 0)),
        ("2026-12-01T10:00:00Z", (datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC), 0)),
    ],
)
def test_ticks_read_and_write_dotnet_literals(text: str, expected: tuple[datetime, int]) -> None:
    assert parse_ticks(text) == ticks(*expected)
    assert parse_ticks(format_datetime(*expected)) == ticks(*expected)
    assert format_datetime(*expected).endswith("Z")


def test_ticks_refuse_what_retail_server_refuses() -> None:
    for text in ("2026-12-01T10:00:00", "2026-12-01T10:00:00.12345678Z", "yesterday"):
        with pytest.raises(ValueError, match=r"Edm\.DateTimeOffset"):
            parse_ticks(text)
    with pytest.raises(ValueError, match="seventh"):
        ticks(NOW, 10)
