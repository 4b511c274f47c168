"""The F&O client: the CreateCustomer custom service and the ``CustomersV3`` OData lookup.

Tokens are app-only tokens for ``{environment URL}/.default``. F&O insists that the token's
``aud`` equals the environment URL exactly, lower case and without a trailing slash, so the
audience is normalised here once, whatever case the setting was written in.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

from shared import telemetry
from shared.finance_ops.errors import (
    FnoAuthError,
    FnoCredentialsError,
    FnoCredentialsUnavailableError,
    FnoDuplicateError,
    FnoError,
    FnoOperationError,
    FnoRejectedError,
    FnoThrottledError,
    FnoTimeoutError,
    FnoUnavailableError,
    field_of,
    is_duplicate,
    user_facing_message,
)
from shared.finance_ops.models import (
    ExistingCustomer,
    account_number_from,
    contract_says_failed,
    odata_string,
)
from shared.http import (
    HttpClient,
    UpstreamConnectionError,
    UpstreamResponse,
    UpstreamTimeoutError,
)
from shared.identity import TokenError, TokenProvider, TokenUnavailableError, scope_for
from shared.managed_identity import FederatedCredentialError
from shared.secrets import SecretNotFoundError, SecretUnavailableError

logger = logging.getLogger(__name__)

SERVICE = "F&O"


def environment_audience(fno_url: str) -> str:
    """The token audience F&O accepts: the environment URL, lower case, no trailing slash."""
    return fno_url.strip().rstrip("/").lower()


class FinanceOpsClient:
    """One per process (per F&O environment); safe to share between concurrent invocations."""

    def __init__(
        self,
        http: HttpClient,
        tokens: TokenProvider,
        *,
        base_url: str,
        create_customer_path: str,
        customers_entity: str = "CustomersV3",
        timeout: float | None = None,  # a per-call limit handed to HttpClient.send
        secret_name: str | None = None,  # named in configuration faults, never its value
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._secret_name = secret_name
        self.base_url = base_url.strip().rstrip("/")
        self.audience = environment_audience(base_url)
        self.scope = scope_for(self.audience)
        telemetry.name_scope(self.scope, "finance_ops")
        self._create_url = self.base_url + create_customer_path
        self._entity_url = f"{self.base_url}/data/{customers_entity}"
        self._timeout = timeout

    async def create_customer(self, payload: Mapping[str, Any], *, correlation_id: str) -> str:
        """POST the ``{"Customer": {...}}`` payload; the new customer's account number.

        Never retried after the request may have reached X++ (a 500, a timeout, a broken
        connection): a second attempt could create the customer twice. Raises :class:`FnoError`.
        """
        response = await self._send("POST", self._create_url, correlation_id, json_body=payload, create=True)
        if response.status != 200:
            raise error_for_response(response, create=True)
        body = _json_or_none(response)
        if contract_says_failed(body):
            raise _rejection_from_contract(body, response)
        account = account_number_from(body)
        if account is None:
            raise FnoOperationError(
                "CreateCustomer answered 200 without a recognisable account number",
                status=200,
                correlation_id=response.correlation_id,
                may_have_created=True,
            )
        return account

    async def find_customer_by_email(
        self, email: str, legal_entity: str, *, correlation_id: str
    ) -> ExistingCustomer | None:
        """The first customer of ``legal_entity`` whose primary contact email is ``email``."""
        odata_filter = (
            f"dataAreaId eq {odata_string(legal_entity.lower())} "
            f"and PrimaryContactEmail eq {odata_string(email)}"
        )
        params = {
            "$filter": odata_filter,
            "$select": "CustomerAccount,dataAreaId",
            "$top": "1",
            # Without it OData reads the service user's default company only.
            "cross-company": "true",
        }
        response = await self._send("GET", self._entity_url, correlation_id, params=params)
        if response.status != 200:
            raise error_for_response(response, create=False)
        rows = field_of(_json_or_none(response), "value")
        if not isinstance(rows, list):
            raise FnoOperationError(
                "the customers entity answered without a value array",
                status=200,
                correlation_id=response.correlation_id,
            )
        for row in rows:
            if isinstance(row, dict) and row.get("CustomerAccount"):
                return ExistingCustomer.model_validate(row)
        return None

    async def _send(
        self,
        method: str,
        url: str,
        correlation_id: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        create: bool = False,
    ) -> UpstreamResponse:
        # A 401 means F&O did not run the operation, so one more try with a fresh token is safe.
        for attempt in (1, 2):
            headers = {
                "Authorization": f"Bearer {await self._token(correlation_id)}",
                "Accept": "application/json",
            }
            if not create:
                headers |= {"OData-Version": "4.0", "OData-MaxVersion": "4.0"}
            try:
                response = await self._http.send(
                    method,
                    url,
                    service=SERVICE,
                    headers=headers,
                    params=params,
                    json_body=json_body,
                    idempotent=not create,
                    correlation_id=correlation_id,
                    timeout=self._timeout,
                )
            except UpstreamTimeoutError:
                raise FnoTimeoutError(
                    "no answer in time", correlation_id=correlation_id, may_have_created=create
                ) from None
            except UpstreamConnectionError as exc:
                import aiohttp  # loaded already: the error came through its session

                never_sent = isinstance(exc.__cause__, aiohttp.ClientConnectorError)
                raise FnoUnavailableError(
                    "cannot reach F&O" if never_sent else "the connection to F&O broke",
                    correlation_id=correlation_id,
                    may_have_created=create and not never_sent,
                ) from None
            if response.status == 401 and attempt == 1:
                self._tokens.invalidate(self.scope)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self, correlation_id: str) -> str:
        """A token for F&O; any failure to get one is :class:`FnoCredentialsError` (nothing sent).

        The reasons name the secret and the exception type only: an SDK's text can quote a
        response, and a secret's value must never reach a log.
        """
        secret = repr(self._secret_name) if self._secret_name else "(name not given)"
        try:
            # The secret read and the token request share the call's deadline: the till is waiting,
            # and a hanging Key Vault must not hold it longer than a hanging F&O would.
            async with asyncio.timeout(self._timeout):
                return await self._tokens.get_token(self.scope)
        except TimeoutError:
            source = f"secret {secret} from Key Vault" if self._secret_name else "its credential"
            raise FnoCredentialsUnavailableError(
                f"no token for F&O within {self._timeout}s ({source}, then Entra ID)",
                correlation_id=correlation_id,
            ) from None
        except SecretUnavailableError:
            raise FnoCredentialsUnavailableError(
                f"Key Vault did not give the client secret {secret} in time",
                correlation_id=correlation_id,
            ) from None
        except TokenUnavailableError as exc:
            # Throttled, a 5xx, a broken connection: Entra ID's trouble, not our configuration.
            raise FnoCredentialsUnavailableError(
                f"Entra ID failed a token for {self.scope} ({exc.error or 'error'}); nothing was sent",
                correlation_id=correlation_id,
            ) from None
        except FederatedCredentialError as exc:
            # No secret in play: the message itself says what to check (and holds no token).
            reason = str(exc)
        except TokenError as exc:
            reason = f"Entra ID refused a token for {self.scope} ({exc.error or 'error'}; secret {secret})"
        except SecretNotFoundError:
            reason = f"the client secret {secret} is not set (Key Vault or its environment variable)"
        except Exception as exc:
            reason = _token_failure(exc, self.scope, secret)
        raise FnoCredentialsError(reason, correlation_id=correlation_id)


def _token_failure(exc: Exception, scope: str, secret: str) -> str:
    """Why a token could not be had, from an error of the Key Vault SDK, requests (under MSAL) or
    anything else they raise; all mean "no token".

    The SDKs load on first use: an error can only be of a class whose module is loaded, so an
    unloaded one is not imported just to be asked.
    """
    azure_core = sys.modules.get("azure.core.exceptions")
    if azure_core is not None and isinstance(exc, azure_core.AzureError):
        status = getattr(exc, "status_code", None)
        return (
            f"reading the client secret {secret} from Key Vault failed "
            f"({type(exc).__name__}{f', HTTP {status}' if status else ''})"
        )
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.RequestException):
        return f"Entra ID could not be reached for a token ({type(exc).__name__})"
    return f"getting a token for {scope} failed ({type(exc).__name__})"


def error_for_response(response: UpstreamResponse, *, create: bool) -> FnoError:
    """The typed error for an F&O answer other than 200.

    ``create`` says the answer is CreateCustomer's. There a 502, 504 or other unexpected 5xx from
    F&O or the gateway in front of it may come after X++ ran (a front end timing out while the
    operation completes), so the customer may have been created; 500 (X++ threw: its transaction
    rolled back) and 429/503 (not processed) are definite.
    """
    status = response.status
    body = _json_or_none(response)
    exception_type = _str_or_none(field_of(body, "ExceptionType"))
    activity_id = _str_or_none(field_of(body, "ActivityId")) or response.upstream_request_id
    message = _message_of(body)
    common: dict[str, Any] = {
        "status": status,
        "exception_type": exception_type,
        "activity_id": activity_id,
        "correlation_id": response.correlation_id,
    }
    if status == 400:
        return FnoRejectedError(
            "F&O rejected the payload", user_message=user_facing_message(message), **common
        )
    if status in (401, 403):
        return FnoAuthError("F&O refused the app's token", **common)
    if status in (429, 503):
        return FnoThrottledError(
            "F&O is throttling or unavailable", retry_after=response.retry_after(), **common
        )
    if status == 404:
        return FnoOperationError("the F&O endpoint does not exist (check the service path)", **common)
    if status == 500:
        user_message = user_facing_message(message)
        if is_duplicate(exception_type, message):
            return FnoDuplicateError("F&O refused a duplicate", user_message=user_message, **common)
        return FnoOperationError("the F&O operation threw", user_message=user_message, **common)
    return FnoUnavailableError(
        f"unexpected answer from F&O or its gateway ({status})",
        may_have_created=create and status >= 500,
        **common,
    )


def _rejection_from_contract(body: Any, response: UpstreamResponse) -> FnoError:
    message = _message_of(body)
    common: dict[str, Any] = {
        "status": 200,
        "user_message": user_facing_message(message),
        "correlation_id": response.correlation_id,
    }
    if is_duplicate(None, message):
        return FnoDuplicateError("F&O refused a duplicate (Success false)", **common)
    return FnoRejectedError("F&O refused the customer (Success false)", **common)


def _message_of(body: Any) -> object:
    message = field_of(body, "Message")
    if message is None:
        # OData errors: {"error": {"code": ..., "message": ...}}
        message = field_of(field_of(body, "error"), "message")
    if message is None and isinstance(body, str):
        message = body
    return message


def _json_or_none(response: UpstreamResponse) -> Any:
    try:
        return response.json()
    except ValueError:
        text = response.text().strip()
        return text or None


def _str_or_none(value: object) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None
