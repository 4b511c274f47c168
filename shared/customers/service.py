"""Create a customer in F&O for the POS: duplicate check, idempotent replays, error mapping.

The service takes a validated request and answers with an :class:`Outcome` (status, JSON body,
headers) that the blueprint turns into an HTTP response unchanged. Errors are RFC 9457 problem
objects that carry the correlation id; their ``detail`` may quote F&O's user-facing message, but
the log lines only ever name the error's kind, exception type and ids, never the message, which
can quote the customer's own data.

Which outcomes are kept for ``Idempotency-Key`` replays: every answer after which F&O has or may
have created the customer (201, 504 and the other "may have created" failures), and F&O's
definitive refusals (409 duplicate, 422 rejected). Failures where F&O certainly did nothing (503
throttling, 502 credentials, a failed duplicate lookup) release the key so the till can retry; a
state store that fails before the key is claimed answers 503 with nothing claimed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.customers.idempotency import (
    Claim,
    IdempotencyRecords,
    InFlight,
    KeyReused,
    Replay,
    StoredResponse,
    body_hash,
)
from shared.customers.links import deep_links
from shared.finance_ops.client import FinanceOpsClient
from shared.finance_ops.errors import (
    FnoAuthError,
    FnoCredentialsError,
    FnoCredentialsUnavailableError,
    FnoDuplicateError,
    FnoError,
    FnoRejectedError,
    FnoThrottledError,
    FnoTimeoutError,
)
from shared.http import HttpClient, RetryPolicy
from shared.http_input import CORRELATION_HEADER
from shared.identity import TokenProvider
from shared.problems import problem
from shared.runtime import Runtime, entra_credential
from shared.state.store import StoreError
from shared.store_commerce import (
    CREATE_TRANSACTION,
    CreateTransactionParams,
)

logger = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_SECONDS = 10
REPLAY_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateCustomerCommand:
    """What the blueprint hands over: the F&O wire payload of a validated request, and its keys."""

    payload: dict[str, Any]
    legal_entity: str
    email: str | None
    correlation_id: str
    idempotency_key: str | None = None


@dataclass
class _Progress:
    """How far one creation got: once CreateCustomer was called, F&O may have created it."""

    create_called: bool = False


class CustomerService:
    def __init__(
        self,
        fno: FinanceOpsClient,
        records: IdempotencyRecords,
        *,
        duplicate_check: bool,
        cpos_url: str | None,
        own_tokens: TokenProvider | None = None,
    ) -> None:
        self._fno = fno
        self._records = records
        self._duplicate_check = duplicate_check
        self._cpos_url = cpos_url
        self._own_tokens = own_tokens

    def close(self) -> None:
        """Close the F&O token provider when it is this service's own (a separate FNO_CLIENT_ID)."""
        if self._own_tokens is not None:
            self._own_tokens.close()

    async def create(self, command: CreateCustomerCommand) -> Outcome:
        cid = command.correlation_id
        claim: Claim | None = None
        if command.idempotency_key is not None:
            try:
                begun = await self._records.begin(command.idempotency_key, body_hash(command.payload))
            except StoreError as exc:
                # Nothing was claimed and F&O was not asked: the till may simply try again.
                outcome = _problem(
                    503,
                    "state-store-unavailable",
                    "The connector's state store is unavailable",
                    "Nothing was created; try again shortly with the same Idempotency-Key.",
                    cid,
                )
                outcome.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER_SECONDS)
                return _logged(cid, f"the Idempotency-Key record failed ({type(exc).__name__})", outcome)
            if isinstance(begun, Replay):
                logger.info(
                    "create_customer replayed a stored answer (%d) [correlation id %s]",
                    begun.response.status,
                    cid,
                )
                stored = begun.response
                # The body documents the first answer (its correlationId included); the headers
                # belong to this request, whose correlation id is the one in the logs.
                headers = {k: v for k, v in stored.headers.items() if k.lower() != CORRELATION_HEADER}
                headers |= {CORRELATION_HEADER: cid, REPLAY_HEADER: "true"}
                return Outcome(stored.status, stored.body, headers)
            if isinstance(begun, InFlight):
                return _logged(
                    cid,
                    "idempotency key in flight",
                    _problem(
                        409,
                        "request-in-progress",
                        "A request with this Idempotency-Key is still running",
                        "Wait for the first request to finish, then repeat it to get its answer.",
                        cid,
                    ),
                )
            if isinstance(begun, KeyReused):
                return _logged(
                    cid,
                    "idempotency key reused",
                    _problem(
                        422,
                        "idempotency-key-reused",
                        "This Idempotency-Key was used with another body",
                        "Use a new Idempotency-Key for a different customer.",
                        cid,
                    ),
                )
            claim = begun
        progress = _Progress()
        try:
            outcome, keep = await self._create(command, progress)
        except BaseException as exc:
            if claim is not None and not progress.create_called:
                # F&O was never asked to create: free the key so the till's retry runs again
                # instead of waiting out the lease. The original failure propagates either way.
                await self._release(claim, cid, after=type(exc).__name__)
                raise
            if not progress.create_called or not isinstance(exc, Exception):
                raise
            # Something unforeseen after CreateCustomer was sent: F&O may have created the
            # customer, so answer (and keep for the key) what a broken connection answers.
            logger.exception(
                "create_customer failed after CreateCustomer was sent (%s) [correlation id %s]",
                type(exc).__name__,
                cid,
            )
            outcome = _uncertain(cid)
            if claim is not None:
                await self._complete(claim, outcome, cid)
            return outcome
        if claim is not None:
            if keep:
                await self._complete(claim, outcome, cid)
            else:
                await self._release(claim, cid, after=f"answer {outcome.status}")
        return outcome

    async def _complete(self, claim: Claim, outcome: Outcome, cid: str) -> None:
        try:
            await self._records.complete(claim, StoredResponse(outcome.status, outcome.body, outcome.headers))
        except Exception as exc:
            # The answer stands (after a 201 the customer exists); only its replay is lost. The key
            # stays claimed until the lease runs out, so a retry meanwhile gets 409, not a new customer.
            logger.error(
                "create_customer could not store its answer %d for the Idempotency-Key (%s); "
                "answering it anyway [correlation id %s]",
                outcome.status,
                type(exc).__name__,
                cid,
            )

    async def _release(self, claim: Claim, cid: str, *, after: str) -> None:
        try:
            await self._records.release(claim)
        except Exception as exc:
            logger.error(
                "create_customer could not release the Idempotency-Key after %s (%s); it stays "
                "claimed until its lease runs out [correlation id %s]",
                after,
                type(exc).__name__,
                cid,
            )

    async def _create(self, command: CreateCustomerCommand, progress: _Progress) -> tuple[Outcome, bool]:
        cid = command.correlation_id
        try:
            if self._duplicate_check and command.email:
                existing = await self._fno.find_customer_by_email(
                    command.email, command.legal_entity, correlation_id=cid
                )
                if existing is not None:
                    logger.info(
                        "create_customer found an existing customer %s [correlation id %s]",
                        existing.account,
                        cid,
                    )
                    outcome = _problem(
                        409,
                        "customer-exists",
                        "A customer with this email exists already",
                        f"Customer {existing.account} in {command.legal_entity} has this email address.",
                        cid,
                        customerAccount=existing.account,
                    )
                    return outcome, True
        except FnoError as exc:
            return self._failure(exc, cid, during="duplicate check"), False
        progress.create_called = True
        try:
            account = await self._fno.create_customer(command.payload, correlation_id=cid)
        except FnoError as exc:
            return self._failure(exc, cid, during="CreateCustomer"), _keep(exc)
        logger.info("create_customer created customer %s [correlation id %s]", account, cid)
        return Outcome(201, self._created_body(account), {CORRELATION_HEADER: cid}), True

    def _created_body(self, account: str) -> dict[str, Any]:
        links = deep_links(CREATE_TRANSACTION, CreateTransactionParams(customer_id=account), self._cpos_url)
        return {"customerAccount": account, "deepLinks": links}

    def _failure(self, exc: FnoError, cid: str, *, during: str) -> Outcome:
        detail = exc.user_message
        if isinstance(exc, FnoDuplicateError):
            outcome = _problem(
                409,
                "customer-exists",
                "F&O refused the customer as a duplicate",
                detail or "The customer exists already.",
                cid,
            )
        elif isinstance(exc, FnoRejectedError):
            outcome = _problem(
                422,
                "rejected-by-fno",
                "F&O rejected the customer",
                detail or "F&O refused the customer data.",
                cid,
            )
        elif isinstance(exc, FnoCredentialsUnavailableError):
            # Key Vault or Entra ID too slow or failing: nothing was sent, the till may retry.
            outcome = _problem(
                503,
                "credentials-unavailable",
                "The connector could not get its credentials in time",
                "Nothing was sent to F&O; try again shortly.",
                cid,
            )
            outcome.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER_SECONDS)
        elif isinstance(exc, FnoCredentialsError):
            # Our secret is missing or refused by Key Vault, Entra ID refused it, or Entra ID
            # could not be reached at all (a wrong authority host, the network).
            logger.error(
                "configuration fault: %s during %s; check the app's credential (ENTRA_CREDENTIAL: "
                "the secret in Key Vault or its environment variable, or the federated credential), "
                "ENTRA_TENANT_ID, ENTRA_AUTHORITY_HOST and the Entra app",
                exc,
                during,
            )
            outcome = _problem(
                502,
                "upstream-configuration",
                "The connector cannot sign in to F&O",
                "The connector could not get its F&O credentials; an administrator must fix them.",
                cid,
            )
        elif isinstance(exc, FnoAuthError):
            # Our Entra app, its secret or its F&O mapping is wrong: nothing the caller can fix.
            logger.error(
                "configuration fault: %s during %s; check FNO_URL, the Entra app and its F&O "
                "'Microsoft Entra applications' mapping",
                exc,
                during,
            )
            outcome = _problem(
                502,
                "upstream-configuration",
                "The connector cannot sign in to F&O",
                "The connector's F&O credentials were refused; an administrator must fix them.",
                cid,
            )
        elif isinstance(exc, FnoThrottledError):
            wait = (
                DEFAULT_RETRY_AFTER_SECONDS if exc.retry_after is None else max(1, math.ceil(exc.retry_after))
            )
            outcome = _problem(503, "upstream-busy", "F&O is busy", "F&O asked to retry later.", cid)
            outcome.headers["Retry-After"] = str(wait)
        elif isinstance(exc, FnoTimeoutError):
            outcome = _problem(
                504,
                "upstream-timeout",
                "F&O did not answer in time",
                "The customer may have been created; look it up before creating it again."
                if exc.may_have_created
                # The duplicate look-up timed out: CreateCustomer was never called.
                else "The customer was not created; try again.",
                cid,
            )
        elif exc.may_have_created:
            # F&O may have run X++ (a 200 we cannot read, a connection broken after sending): a
            # retry with a new key could create the customer twice, so say so, as the 504 does.
            outcome = _uncertain(cid)
        else:
            outcome = _problem(
                502,
                "upstream-error",
                "F&O could not create the customer",
                detail or "F&O failed; try again later.",
                cid,
            )
        # str(exc) holds the kind, status, exception type and ids, never F&O's message text.
        return _logged(cid, f"{during} failed: {exc}", outcome)


def _keep(exc: FnoError) -> bool:
    return exc.may_have_created or isinstance(exc, FnoDuplicateError | FnoRejectedError)


PROBLEM_TYPE_PREFIX = "urn:d365-commerce-connector:problem:"


def _uncertain(cid: str) -> Outcome:
    return _problem(
        502,
        "upstream-uncertain",
        "F&O's answer does not tell whether the customer was created",
        "The customer may have been created; look it up before creating it again.",
        cid,
    )


def _problem(status: int, kind: str, title: str, detail: str, cid: str, **extensions: Any) -> Outcome:
    model = problem(
        status, correlation_id=cid, title=title, detail=detail, problem_type=PROBLEM_TYPE_PREFIX + kind
    )
    body = model.model_dump(mode="json", by_alias=True, exclude_none=True) | extensions
    return Outcome(status, body, {CORRELATION_HEADER: cid})


def _logged(cid: str, reason: str, outcome: Outcome) -> Outcome:
    level = logging.ERROR if outcome.status >= 500 else logging.WARNING
    logger.log(level, "create_customer answered %d: %s [correlation id %s]", outcome.status, reason, cid)
    return outcome


# ----- wiring: one F&O client per process, built on first use


def customer_service(runtime: Runtime) -> CustomerService | None:
    """The service for this process, or None when ``FNO_URL`` is not set."""
    settings = runtime.settings
    if not settings.fno_url:
        return None
    service = runtime.extras.get("customers.service")
    if isinstance(service, CustomerService):
        return service
    tokens = runtime.tokens
    if settings.fno_client_id and settings.fno_client_id != settings.entra_client_id:
        tokens = TokenProvider(
            authority=settings.authority,
            client_id=settings.fno_client_id,
            # Federated: the same managed identity, trusted by this app registration too.
            **entra_credential(settings, settings.fno_client_secret_name, runtime.secrets, runtime.assertion),
            extra_ca_bundle=settings.extra_ca_bundle,
            timeout_seconds=settings.http_timeout_seconds,
        )
    # The till waits for this call: fewer attempts and shorter waits than background work.
    http = HttpClient(
        runtime.http.session,
        RetryPolicy(
            max_attempts=settings.fno_max_attempts,
            backoff_base=min(settings.http_backoff_base_seconds, 1.0),
            backoff_max=min(settings.http_backoff_max_seconds, 2.0),
            max_server_delay=settings.fno_max_retry_wait_seconds,
        ),
        max_response_bytes=runtime.http.max_response_bytes,
    )
    secret_name: str | None = settings.entra_client_secret_name
    if settings.fno_client_id and settings.fno_client_id != settings.entra_client_id:
        secret_name = settings.fno_client_secret_name
    if settings.entra_credential == "federated":
        secret_name = None  # no secret is read
    fno = FinanceOpsClient(
        http,
        tokens,
        secret_name=secret_name,
        base_url=settings.fno_url,
        create_customer_path=settings.fno_create_customer_path,
        customers_entity=settings.fno_customers_entity,
        timeout=settings.fno_timeout_seconds,
    )
    # A claim older than any F&O call can last belongs to a worker that died.
    lease = (
        2 * settings.fno_timeout_seconds * settings.fno_max_attempts
        + settings.fno_max_retry_wait_seconds
        + 30
    )
    records = IdempotencyRecords(
        runtime.store, ttl_seconds=settings.idempotency_ttl_hours * 3600, lease_seconds=lease
    )
    service = CustomerService(
        fno,
        records,
        duplicate_check=settings.duplicate_check_enabled,
        cpos_url=settings.cpos_url,
        own_tokens=tokens if tokens is not runtime.tokens else None,
    )
    runtime.extras["customers.service"] = service
    return service


def command_from(
    payload: Mapping[str, Any], *, correlation_id: str, idempotency_key: str | None
) -> CreateCustomerCommand:
    customer = payload["Customer"]
    email = customer.get("EmailAddress")
    return CreateCustomerCommand(
        payload=dict(payload),
        legal_entity=str(customer["LegalEntity"]),
        email=email if isinstance(email, str) and email else None,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
    )
