"""The ledger's failure reasons are short, stable names an operator can count and look up."""

from __future__ import annotations

from shared.abandoned_carts.notify import failure_reason
from shared.http import UpstreamResponseTooLargeError
from shared.secrets import SecretUnavailableError


def test_an_oversize_answer_is_named_as_such_never_unreachable() -> None:
    error = UpstreamResponseTooLargeError(
        "Retail Server", "GET Carts", limit=1024, status=200, declared=None, correlation_id="c"
    )
    assert failure_reason(error) == "retail_server_response_too_large"


def test_a_key_vault_outage_is_named_after_the_vault_never_an_exception_class() -> None:
    assert failure_reason(SecretUnavailableError("Key Vault did not answer")) == "key_vault_unavailable"
