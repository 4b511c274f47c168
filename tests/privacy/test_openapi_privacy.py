"""openapi.yaml against the privacy endpoints' real behaviour: every documented status is produced
by a real call, nothing undocumented is produced, and every JSON body validates against its schema."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from sandbox.server import Sandbox
from shared.privacy import blueprint
from shared.privacy.tokens import token_for
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from shared.timeutil import utcnow
from tests.customers.helpers import principal
from tests.customers.test_openapi import load_spec, violations
from tests.privacy.helpers import SECRET, call, erasure_request, unsubscribe_request


@pytest.fixture
def spec() -> dict[str, Any]:
    return load_spec()


def check(spec: dict[str, Any], operation: dict[str, Any], response: func.HttpResponse) -> None:
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"undocumented status {response.status_code}"
    for header in documented.get("headers", {}):
        assert header in response.headers, f"{response.status_code}: missing header {header}"
    if "content" not in documented:
        assert response.get_body() == b""
        return
    media = response.mimetype
    assert media in documented["content"], f"{response.status_code}: undocumented media type {media}"
    if media.endswith("json"):
        schema = documented["content"][media]["schema"]
        body = json.loads(response.get_body())
        assert violations(spec, schema, body) == [], (response.status_code, body)


def test_the_paths_are_the_registered_functions(
    spec: dict[str, Any], registered_functions: dict[str, Any]
) -> None:
    routes = {}
    for name in ("unsubscribe", "privacy_erasure"):
        trigger = json.loads(registered_functions[name].get_function_json())["bindings"][0]
        routes["/" + trigger["route"]] = sorted(m.lower() for m in trigger["methods"])
    assert {path: sorted(spec["paths"][path]) for path in routes} == routes
    # The link is clicked from an email: no function key.
    assert spec["paths"]["/unsubscribe"]["get"]["security"] == []
    assert spec["paths"]["/unsubscribe"]["post"]["security"] == []
    assert "security" not in spec["paths"]["/privacy/erasure"]["post"]


async def test_unsubscribe_matches_the_document(
    spec: dict[str, Any],
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = next(c for c in sandbox.data.customers.values() if c.email)
    good = token_for(customer.email, secret=SECRET, now=utcnow(), days=1)
    expired = token_for(customer.email, secret=SECRET, now=utcnow() - timedelta(days=3), days=1)
    for method in ("get", "post"):
        operation = spec["paths"]["/unsubscribe"][method]
        seen: set[int] = set()

        async def run(
            token: str | None,
            method: str = method,
            operation: Any = operation,
            seen: set[int] = seen,
            one_click: bool = True,
        ) -> None:
            response = await call(
                registered_functions,
                "unsubscribe",
                unsubscribe_request(method.upper(), token, one_click=one_click),
            )
            check(spec, operation, response)
            seen.add(response.status_code)

        await run(good)
        if method == "post":
            await run(good, one_click=False)  # the confirmation page's button: 200
        await run(expired)
        monkeypatch.delenv("UNSUBSCRIBE_SIGNING_SECRET")
        runtime.secrets.invalidate(runtime.settings.unsubscribe_signing_secret_name)
        await run(good)  # 503
        monkeypatch.setenv("UNSUBSCRIBE_SIGNING_SECRET", SECRET)
        with monkeypatch.context() as patched:
            patched.setattr(blueprint, "verify", _explode)
            await run(good)  # 500
        assert sorted(seen) == sorted(int(status) for status in operation["responses"])


async def test_erasure_matches_the_document(
    spec: dict[str, Any],
    registered_functions: dict[str, Any],
    runtime: Runtime,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operation = spec["paths"]["/privacy/erasure"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert violations(spec, schema, {"email": "a@b.example", "customerAccount": "C1"}) == []
    assert violations(spec, schema, {"name": "x"}) == ["$.name: undocumented"]
    seen: set[int] = set()

    async def run(request: func.HttpRequest) -> None:
        response = await call(registered_functions, "privacy_erasure", request)
        check(spec, operation, response)
        seen.add(response.status_code)

    await run(erasure_request({"email": "a@b.example", "customerAccount": "C1"}))
    await run(erasure_request({"customerAccount": "C1", "extra": 1}))
    await run(erasure_request({"email": "x" * 5000}))
    await run(erasure_request(raw=b"<x/>", **{"Content-Type": "application/xml"}))
    created = Runtime.create(settings.model_copy(update={"easy_auth_enabled": True}))
    set_runtime(created)
    await run(erasure_request({"customerAccount": "C1"}, **{"X-MS-CLIENT-PRINCIPAL": principal("Other")}))
    set_runtime(runtime)
    await created.close()
    monkeypatch.setattr(blueprint, "erase", _explode)
    await run(erasure_request({"customerAccount": "C1"}))

    assert sorted(seen) == sorted(int(status) for status in operation["responses"])


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("simulated failure")
