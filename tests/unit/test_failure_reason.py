"""The ledger's failure reasons are short, stable names an operator can count and look up."""

from __future__ import annotations

from shared.abandoned_carts.notify import failure_reason
from shared.http import UpstreamResponseTooLargeError
from shared.identity import TokenError, TokenTimeoutError, TokenUnavailableError, TokenUnreachableError
from shared.secrets import SecretUnavailableError


def test_an_oversize_answer_is_named_as_such_never_unreachable() -> None:
    error = UpstreamResponseTooLargeError(
        "Retail Server", "GET Carts", limit=1024, status=200, declared=None, correlation_id="c"
    )
    assert failure_reason(error) == "retail_server_response_too_large"


def test_a_key_vault_outage_is_named_after_the_vault_never_an_exception_class() -> None:
    assert failure_reason(SecretUnavailableError("Key Vault did not answer")) == "key_vault_unavailable"


def test_entra_failures_are_named_by_who_must_act_never_an_exception_class() -> None:
    assert failure_reason(TokenError("refused", error="invalid_client")) == "entra_refused"
    assert failure_reason(TokenUnreachableError("no connection", error="unreachable")) == "entra_unreachable"
    assert failure_reason(TokenUnavailableError("503", error="unavailable")) == "entra_unavailable"
    assert failure_reason(TokenTimeoutError("no answer", error="timeout")) == "entra_unavailable"
