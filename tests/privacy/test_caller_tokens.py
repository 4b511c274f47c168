"""The Entra token check behind the erasure role: keys read once and cached, a rollover picked up,
made-up key ids unable to make the app hammer Entra, and stale keys used while Entra is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sandbox.server import Sandbox
from shared.caller_auth import (
    METADATA_TTL_SECONDS,
    MIN_REFRESH_SECONDS,
    EntraTokenValidator,
    IdentityProviderUnavailableError,
    UnauthenticatedError,
)
from shared.http import HttpClient, RetryPolicy, new_session
from tests.privacy.helpers import API_AUDIENCE, ERASE_ROLE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[HttpClient]:
    session = new_session(total_timeout=5, connect_timeout=5, ssl_context=sandbox.client_ssl_context())
    try:
        yield HttpClient(session, RetryPolicy(max_attempts=1))
    finally:
        await session.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def validator(sandbox: Sandbox, http: HttpClient, clock: Clock) -> EntraTokenValidator:
    return EntraTokenValidator(http, authority=sandbox.authority, audiences={API_AUDIENCE}, clock=clock)


def key_reads(sandbox: Sandbox) -> int:
    return sandbox.stats.requests[f"GET /entra/{sandbox.tenant_id}/discovery/v2.0/keys"]


def token(sandbox: Sandbox) -> str:
    return sandbox.caller_token(audience=API_AUDIENCE, roles=[ERASE_ROLE])


async def test_keys_are_read_once_for_many_tokens_even_at_once(
    sandbox: Sandbox, validator: EntraTokenValidator
) -> None:
    results = await asyncio.gather(*(validator.validate(token(sandbox)) for _ in range(10)))
    assert all(claims["roles"] == [ERASE_ROLE] for claims in results)
    await validator.validate(token(sandbox))
    assert key_reads(sandbox) == 1
    assert (
        sandbox.stats.requests[f"GET /entra/{sandbox.tenant_id}/v2.0/.well-known/openid-configuration"] == 1
    )
    assert sandbox.stats.requests[f"GET /entra/{sandbox.tenant_id}/.well-known/openid-configuration"] == 1


async def test_a_rolled_over_key_is_fetched_once_when_a_token_names_it(
    sandbox: Sandbox, validator: EntraTokenValidator, clock: Clock
) -> None:
    await validator.validate(token(sandbox))
    sandbox.tokens.rotate_key()
    clock.now += MIN_REFRESH_SECONDS
    await validator.validate(token(sandbox))
    await validator.validate(token(sandbox))
    assert key_reads(sandbox) == 2


async def test_made_up_key_ids_cause_at_most_one_read_per_interval(
    sandbox: Sandbox, validator: EntraTokenValidator, clock: Clock
) -> None:
    genuine = token(sandbox)
    await validator.validate(genuine)
    sandbox.tokens.rotate_key(publish=False)
    unknown = token(sandbox)
    with pytest.raises(UnauthenticatedError, match="not signed by a key of the tenant"):
        await validator.validate(unknown)  # the keys were just read: no second read
    assert key_reads(sandbox) == 1
    clock.now += MIN_REFRESH_SECONDS
    for _ in range(5):
        with pytest.raises(UnauthenticatedError):
            await validator.validate(unknown)
    assert key_reads(sandbox) == 2
    await validator.validate(genuine)
    assert key_reads(sandbox) == 2


async def test_keys_are_reread_after_their_ttl_and_kept_while_entra_is_down(
    sandbox: Sandbox, validator: EntraTokenValidator, clock: Clock
) -> None:
    await validator.validate(token(sandbox))
    clock.now += METADATA_TTL_SECONDS
    await validator.validate(token(sandbox))
    assert key_reads(sandbox) == 2
    clock.now += METADATA_TTL_SECONDS
    sandbox.faults.add(f"/entra/{sandbox.tenant_id}/discovery", status=500, times=None)
    await validator.validate(token(sandbox))  # the keys read before still check it
    assert key_reads(sandbox) == 3


async def test_without_keys_ever_read_entra_down_is_unavailable_not_unauthenticated(
    sandbox: Sandbox, validator: EntraTokenValidator
) -> None:
    sandbox.faults.add(f"/entra/{sandbox.tenant_id}/v2.0/.well-known", status=503, times=None)
    with pytest.raises(IdentityProviderUnavailableError):
        await validator.validate(token(sandbox))
