"""Every HTTP function refuses a caller without its key or its role: none slips past.

Each HTTP function registered on ``function_app.app`` must be listed in :data:`GUARDS` with what
guards it, so a new endpoint fails this test until someone decides:

- ``function-key``: auth level FUNCTION or ADMIN, so the Functions host refuses a call without a
  key (one per client: each POS store, each admin tool; never a host key). In-process tests cannot
  present keys, so the auth level is what is checked.
- ``signed-token``: ANONYMOUS, allowed only because a signature in the request is the
  authorisation; proven here to refuse calls without a valid one.
- ``app-role``: deletes data. A function key and, always, a verified app role; proven here to
  refuse a forged principal header, forged and wrong tokens and a caller without the role, with
  nothing erased.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

import azure.functions as func
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.server import Sandbox
from shared.privacy.suppression import SuppressionList
from shared.privacy.tokens import token_for
from shared.runtime import Runtime
from shared.timeutil import utcnow
from tests.customers.helpers import principal
from tests.privacy.helpers import API_AUDIENCE, ERASE_ROLE, bearer, call, erasure_request, unsubscribe_request
from tests.privacy.test_erasure import record, seeded

Guard = Literal["function-key", "signed-token", "app-role"]

GUARDS: dict[str, Guard] = {
    "create_customer": "function-key",
    "store_commerce_links": "function-key",
    "unsubscribe": "signed-token",
    "privacy_erasure": "app-role",
    "recovery_report": "function-key",
}
KEYED_LEVELS = {"FUNCTION", "ADMIN"}


def http_functions(registered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    triggers = {name: json.loads(f.get_function_json())["bindings"][0] for name, f in registered.items()}
    return {name: trigger for name, trigger in triggers.items() if trigger["type"] == "httpTrigger"}


def test_every_http_function_is_listed_with_its_guard(registered_functions: dict[str, Any]) -> None:
    assert sorted(http_functions(registered_functions)) == sorted(GUARDS)


def test_only_signed_token_functions_run_without_a_key(registered_functions: dict[str, Any]) -> None:
    for name, trigger in http_functions(registered_functions).items():
        level = trigger["authLevel"].upper()
        if GUARDS[name] == "signed-token":
            assert level == "ANONYMOUS", name
        else:
            assert level in KEYED_LEVELS, f"{name} runs at {level}: a call without a key would get in"


async def test_unsubscribe_refuses_every_call_without_a_valid_signed_token(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox
) -> None:
    assert [name for name, guard in GUARDS.items() if guard == "signed-token"] == ["unsubscribe"]
    email, _ = seeded(sandbox)
    tokens = [
        None,
        "",
        "v2.AAAA",
        token_for(email, secret="a-guessed-secret-of-thirty-two-bytes", now=utcnow(), days=1),
    ]
    for token in tokens:
        for method in ("GET", "POST"):
            response = await call(registered_functions, "unsubscribe", unsubscribe_request(method, token))
            assert response.status_code == 400, (token, method)
    assert not await SuppressionList(runtime.store).contains(email)


def _stranger() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def refused_credentials(sandbox: Sandbox, role: str) -> dict[str, dict[str, str]]:
    now = int(time.time())
    claims = {
        "aud": API_AUDIENCE,
        "iss": sandbox.tokens.issuer,
        "nbf": now,
        "exp": now + 3600,
        "roles": [role],
    }
    forged = jwt.encode(claims, _stranger(), algorithm="RS256", headers={"kid": sandbox.tokens.key_id})
    return {
        "no credential": {},
        "forged principal header": {"X-MS-CLIENT-PRINCIPAL": principal(role)},
        "forged bearer token": {"Authorization": f"Bearer {forged}"},
        "wrong audience": {
            "Authorization": f"Bearer {sandbox.caller_token(audience='api://someone-else', roles=[role])}"
        },
        "wrong issuer": bearer(sandbox, role, issuer="https://sts.windows.net/another-tenant/"),
        "expired": bearer(sandbox, role, now=now - 7200, lifetime_seconds=3600),
        "without the role": bearer(sandbox, "Customers.Create"),
    }


def erasure_of(email: str, account: str, headers: dict[str, str]) -> func.HttpRequest:
    return erasure_request({"email": email, "customerAccount": account}, **headers)


# The role each data-deleting function needs, and a request that would delete something.
DELETING: dict[str, tuple[str, Callable[[str, str, dict[str, str]], func.HttpRequest]]] = {
    "privacy_erasure": (ERASE_ROLE, erasure_of),
}


async def test_every_data_deleting_function_refuses_an_unverified_role_and_erases_nothing(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sorted(DELETING) == sorted(name for name, guard in GUARDS.items() if guard == "app-role")
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    for name, (role, build) in DELETING.items():
        for case, headers in refused_credentials(sandbox, role).items():
            response = await call(registered_functions, name, build(email, account, headers))
            assert response.status_code in (401, 403), (name, case, response.status_code)
    assert not await SuppressionList(runtime.store).contains(email)
    assert len(await runtime.store.query("ledger", equals={"customerId": account})) == 2
