"""The Retail Server client's look-ups against the sandbox over HTTPS: what notify builds on."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from sandbox.server import Sandbox
from shared.retail_server import client
from shared.retail_server.models import Customer, SimpleProduct
from shared.runtime import Runtime


async def test_customers_by_account_numbers_in_one_call(sandbox: Sandbox, runtime: Runtime) -> None:
    wanted = list(sandbox.data.customers)[:3]
    sandbox.stats.reset()
    customers = await runtime.retail.get_customers("128", [*wanted, "no-such-account"])
    assert sorted(c.account_number for c in customers) == sorted(wanted)
    assert sandbox.stats.requests["POST /rs/Commerce/Customers/GetByAccountNumbers"] == 1
    assert await runtime.retail.get_customers("128", []) == []


async def test_products_by_ids_priced_for_the_channel(sandbox: Sandbox, runtime: Runtime) -> None:
    channel = sandbox.data.channels["067"]
    ids = list(sandbox.data.products)[:4]
    products = await runtime.retail.get_products("067", channel.channel_id, ids)
    assert sorted(p.record_id for p in products) == sorted(ids)
    for product in products:
        assert product.name == sandbox.data.products[product.record_id].name


async def test_media_locations_of_a_product(sandbox: Sandbox, runtime: Runtime) -> None:
    product = next(p for p in sandbox.data.products.values() if p.media)
    channel = sandbox.data.channels["128"]
    media = await runtime.retail.get_media_locations("128", channel.channel_id, product.record_id)
    assert [m.uri for m in media] == [m.uri for m in product.media]


async def test_channel_configuration(sandbox: Sandbox, runtime: Runtime) -> None:
    channel = sandbox.data.channels["067"]
    configuration = await runtime.retail.get_channel_configuration("067")
    assert configuration.record_id == channel.channel_id
    assert configuration.currency == channel.currency
    assert configuration.default_language_id == channel.language


async def test_each_entity_model_gets_its_collection_adapter_built_once(
    sandbox: Sandbox, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pydantic TypeAdapter is built per entity model and kept, not once per collection call."""
    built: list[object] = []

    class CountingAdapter(TypeAdapter[Any]):
        def __init__(self, kind: Any) -> None:
            built.append(kind)
            super().__init__(kind)

    monkeypatch.setattr(client, "_LIST_ADAPTERS", {})
    monkeypatch.setattr(client, "TypeAdapter", CountingAdapter)
    channel = sandbox.data.channels["067"]
    accounts = list(sandbox.data.customers)[:2]
    product_ids = list(sandbox.data.products)[:2]
    for _ in range(3):
        assert await runtime.retail.get_customers("067", accounts)
        assert await runtime.retail.get_products("067", channel.channel_id, product_ids)
    assert built == [list[Customer], list[SimpleProduct]]
