"""openapi.yaml against the functions' real behaviour: every documented status is produced by a
real call, nothing undocumented is produced, and every body validates against its schema."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from sandbox.server import Sandbox
from shared.customers import blueprint
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from tests.customers.conftest import create_route
from tests.customers.helpers import call, http_request, principal, with_fno_token

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
API_CLIENT_ID = "0c057e25-a11e-4c0e-9c0e-c0ec7000a9a2"


def load_spec() -> dict[str, Any]:
    text = "\n".join(line for line in SPEC_PATH.read_text().splitlines() if not line.startswith("#"))
    spec: dict[str, Any] = json.loads(text)
    return spec


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def violations(spec: dict[str, Any], schema: dict[str, Any], value: Any, path: str = "$") -> list[str]:
    """A small JSON-schema check for the keywords openapi.yaml uses."""
    schema = resolve(spec, schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null"]
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return [f"{path}: not an integer"]
    if kind in checks and not isinstance(value, checks[kind]):
        return [f"{path}: not {kind}"]
    problems: list[str] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            problems.append(f"{path}: length")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{path}: pattern")
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{path}: enum")
    low, high = schema.get("minimum", -(10**18)), schema.get("maximum", 10**18)
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        problems.append(f"{path}: range")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [f"{path}.{name}: missing" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                problems += violations(spec, properties[name], item, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}.{name}: undocumented")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += violations(spec, schema["items"], item, f"{path}[{index}]")
    return problems


def check_response(spec: dict[str, Any], operation: dict[str, Any], response: func.HttpResponse) -> None:
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"undocumented status {response.status_code}"
    media = response.mimetype
    assert media in documented["content"], f"{response.status_code}: undocumented media type {media}"
    body = json.loads(response.get_body())
    schema = documented["content"][media]["schema"]
    assert violations(spec, schema, body) == [], (response.status_code, body)
    for header in documented.get("headers", {}):
        if header != "Idempotent-Replayed" and not (
            header == "Retry-After" and "not-configured" in body.get("type", "")
        ):
            assert header in response.headers, f"{response.status_code}: missing header {header}"


Scenario = Callable[[], Awaitable[func.HttpResponse]]


@pytest.fixture
def spec() -> dict[str, Any]:
    return load_spec()


async def with_settings(runtime: Runtime, settings: Settings, **overrides: Any) -> Runtime:
    created = Runtime.create(settings.model_copy(update=overrides))
    set_runtime(created)
    return created


def test_request_example_validates_against_the_request_schema(
    spec: dict[str, Any], payload: dict[str, Any]
) -> None:
    schema = spec["paths"]["/customers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert violations(spec, schema, payload) == []
    payload["Customer"]["Nickname"] = "x"
    assert violations(spec, schema, payload) == ["$.Customer.Nickname: undocumented"]


async def test_create_customer_matches_the_document(
    spec: dict[str, Any],
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    payload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operation = spec["paths"]["/customers"]["post"]
    route = create_route(settings)
    seeded_email = next(c.email for c in sandbox.data.customers.values() if c.email)

    async def post(body: Any = None, raw: bytes | None = None, **headers: str) -> func.HttpResponse:
        return await call(
            registered_functions,
            "create_customer",
            http_request("customers", body if raw is None else None, raw=raw, headers=headers),
        )

    def variant(**changes: Any) -> dict[str, Any]:
        return {"Customer": {**payload["Customer"], **changes}}

    seen: dict[int, func.HttpResponse] = {}

    def record(response: func.HttpResponse) -> None:
        check_response(spec, operation, response)
        seen.setdefault(response.status_code, response)

    record(await post(payload, **{"Idempotency-Key": "doc-1"}))
    record(await post(payload, **{"Idempotency-Key": "doc-1"}))  # replay, 201 again
    record(await post(variant(FirstName="Other"), **{"Idempotency-Key": "doc-1"}))  # 422 reuse
    record(await post(variant(LastName=None)))  # 400
    record(await post(raw=b"{}", **{"Content-Type": "text/plain"}))  # 415
    record(await post(variant(Street="x" * 40_000)))  # 413
    record(await post(variant(EmailAddress=seeded_email)))  # 409 duplicate
    record(await post(variant(LegalEntity="ZZZZ")))  # 422 from F&O
    sandbox.faults.add(
        route, status=500, body='{"Message": "An exception occured when invoking the operation - Boom."}'
    )
    record(await post(variant(EmailAddress="a1@example.org")))  # 502
    sandbox.faults.add(route, status=429, headers={"Retry-After": "0"}, times=None)
    record(await post(variant(EmailAddress="a2@example.org")))  # 503
    sandbox.faults.clear()
    made = [await with_fno_token(await with_settings(runtime, settings, fno_timeout_seconds=0.3))]
    sandbox.faults.add(route, timeout=True)
    record(await post(variant(EmailAddress="a3@example.org")))  # 504
    made.append(await with_settings(runtime, settings, easy_auth_enabled=True))
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    record(await post(payload, **{"X-MS-CLIENT-PRINCIPAL": principal("Customers.Create")}))  # 401
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    record(await post(payload, **{"X-MS-CLIENT-PRINCIPAL": principal("Other")}))  # 403
    set_runtime(runtime)
    monkeypatch.setattr(blueprint, "customer_service", _explode)
    record(await post(variant(EmailAddress="a4@example.org")))  # 500
    for created in made:
        await created.close()

    assert sorted(seen) == sorted(int(status) for status in operation["responses"])


async def test_links_match_the_document(
    spec: dict[str, Any],
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operation = spec["paths"]["/store-commerce/links"]["post"]

    async def post(body: Any = None, raw: bytes | None = None, **headers: str) -> func.HttpResponse:
        return await call(
            registered_functions,
            "store_commerce_links",
            http_request("store-commerce/links", body if raw is None else None, raw=raw, headers=headers),
        )

    seen: dict[int, func.HttpResponse] = {}

    def record(response: func.HttpResponse) -> None:
        check_response(spec, operation, response)
        seen.setdefault(response.status_code, response)

    record(await post({"actionName": "D365.RecallOrder", "parameters": {"salesId": "SO-12345"}}))
    record(await post({"actionName": "D365.RecallOrder", "parameters": {"salesID": "SO-1"}}))  # 400
    record(await post(raw=b"x", **{"Content-Type": "application/xml"}))  # 415
    record(await post({"actionName": "Contoso.Pos.Note", "parameters": {"text": "x" * 40_000}}))  # 413
    record(await post({"actionName": "Contoso.Pos.Note", "parameters": {"text": "x" * 2_000}}))  # 422
    made = await with_settings(runtime, settings, easy_auth_enabled=True, api_client_id=API_CLIENT_ID)
    recall = {"actionName": "D365.RecallOrder", "parameters": {"salesId": "SO-1"}}
    record(await post(recall))  # 401
    token = sandbox.caller_token(audience=f"api://{API_CLIENT_ID}", roles=["Other"])
    sandbox.faults.add(f"/entra/{sandbox.tenant_id}/v2.0/.well-known", status=503, times=None)
    record(await post(recall, Authorization=f"Bearer {token}"))  # 503: Entra's keys unreadable
    sandbox.faults.clear()
    record(await post(recall, Authorization=f"Bearer {token}"))  # 403
    set_runtime(runtime)
    await made.close()
    monkeypatch.setattr(blueprint, "build_links", _explode)
    record(await post({"actionName": "D365.RecallOrder", "parameters": {"salesId": "SO-1"}}))  # 500

    assert sorted(seen) == sorted(int(status) for status in operation["responses"])


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("simulated failure")
