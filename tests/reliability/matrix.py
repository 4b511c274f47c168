"""The fault matrix: every upstream crossed with every fault the sandbox injects, and
the outcome each cell must end in.

This table is the one place the expected outcomes live. ``test_fault_matrix.py`` asserts it cell
by cell; ``python -m tests.reliability.report`` runs the tests and renders the table of
docs/RELIABILITY.md from it together with what the run observed.

A cell is written ``"<outcome>[:<detail>]"``, optionally followed by ``[item N]`` when the outcome
is the target of planned change N and not yet today's behaviour, or ``[gap]`` when no planned
change covers it yet (the cell is then a strict xfail, so it turns into a failure the moment the
fix lands and the mark must go). Outcomes:

- ``sent``: retried and sent (or, for detection, queued); one delivery at the stand-in.
- ``degraded``: sent without the optional data the faulty route would have given.
- ``skipped:<reason>``: deliberately not sent (for detection: the channel skipped this run with
  that reason and the next run resumes from the same watermark).
- ``poisoned:<reason>``: the function raised on every delivery up to ``maxDequeueCount`` in
  host.json, so the host moves the message to the poison queue; ``<reason>`` is the ledger's.
- ``uncertain``: the provider may or may not have mailed; recorded as terminal, never repeated.
- ``http:<status>``: a mapped HTTP error, ``application/problem+json`` with the correlation id.
- ``failed:<reason>``: recorded as failed for good and the message completed (not retried).

``-`` marks a cell that does not apply to that upstream (the reason is in ``NOT_APPLICABLE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Fault(StrEnum):
    RETRY_AFTER = "429 + Retry-After"
    RATELIMIT_RESET = "429 + X-RateLimit-Reset"
    THROTTLED = "429 bare"
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    TIMEOUT = "timeout"
    RESET = "connection reset"
    MALFORMED = "malformed JSON"
    REFUSED = "401 once"
    HANG = "hang"


class Variant(StrEnum):
    ONCE = "once"
    PERSISTENT = "persistent"


class Function(StrEnum):
    NOTIFY = "notify_abandoned_cart"
    DETECT = "detect_abandoned_carts"
    CREATE = "create_customer"


# What the server asks the client to wait, in seconds, in the 429 faults that carry a header.
SERVER_DELAY_SECONDS = 2


@dataclass(frozen=True)
class Row:
    id: str
    upstream: str
    function: Function
    call: str


ROWS: tuple[Row, ...] = (
    Row("entra", "Entra ID", Function.NOTIFY, "token endpoint (app token for Retail Server)"),
    Row(
        "managed-identity",
        "managed identity",
        Function.NOTIFY,
        "`IDENTITY_ENDPOINT` token, the client assertion (`ENTRA_CREDENTIAL=federated`)",
    ),
    Row("retail-cart", "Retail Server", Function.NOTIFY, "cart re-read, `Carts/Search` (required)"),
    Row(
        "retail-customer",
        "Retail Server",
        Function.NOTIFY,
        "customer, `Customers/GetByAccountNumbers` (required)",
    ),
    Row("retail-media", "Retail Server", Function.NOTIFY, "images, `GetMediaLocations` (optional)"),
    Row("emarsys", "Emarsys", Function.NOTIFY, "external-event trigger (dedup: `trigger_id`)"),
    Row("sendgrid", "SendGrid", Function.NOTIFY, "Mail Send (no dedup)"),
    Row("webhook", "webhook", Function.NOTIFY, "signed POST (dedup: `webhook-id`)"),
    Row("keyvault", "Key Vault", Function.NOTIFY, "secret read (Entra client secret)"),
    Row("store-claim", "state store", Function.NOTIFY, "ledger claim, before the send"),
    Row(
        "store-sent-webhook", "state store", Function.NOTIFY, "ledger `sent` write after the webhook took it"
    ),
    Row("store-sent-sendgrid", "state store", Function.NOTIFY, "ledger `sent` write after SendGrid took it"),
    Row("detect", "Retail Server", Function.DETECT, "cart search, `Carts/Search`"),
    Row("entra-fno", "Entra ID", Function.CREATE, "token endpoint (app token for F&O)"),
    Row("fno", "F&O", Function.CREATE, "`CreateCustomer`"),
    Row("keyvault-fno", "Key Vault", Function.CREATE, "secret read (Entra client secret)"),
    Row("store-idempotency", "state store", Function.CREATE, "`Idempotency-Key` record"),
)

NOT_APPLICABLE: dict[tuple[str, Fault], str] = {
    ("sendgrid", Fault.MALFORMED): "the connector never reads the body of SendGrid's 202",
    ("webhook", Fault.MALFORMED): "any 2xx is the receiver's acceptance; its body is not read",
}
for _row in ("store-claim", "store-sent-webhook", "store-sent-sendgrid", "store-idempotency"):
    for _fault, _why in (
        (Fault.RATELIMIT_RESET, "Cosmos DB throttles with x-ms-retry-after-ms: the 429 + Retry-After cell"),
        (Fault.THROTTLED, "Cosmos DB throttles with x-ms-retry-after-ms: the 429 + Retry-After cell"),
        (Fault.MALFORMED, "the store's client parses its own answers; no body reaches the connector"),
        (Fault.REFUSED, "the store authenticates with the managed identity inside its SDK"),
        (Fault.HANG, "the store client's own timeout turns a hang into the timeout cell"),
    ):
        NOT_APPLICABLE[(_row, _fault)] = _why

# Each entry: fault -> (once, persistent). None where the variant does not exist (a hang is
# persistent by nature; "401 once" is once by definition). Details are asserted where they are
# the connector's own stable reasons; an exception type an SDK happens to raise is left out.
_NA = "-"
F = Fault
_RETAIL_REQUIRED = {
    F.RETRY_AFTER: ("sent", "poisoned:retail_server_429"),
    F.RATELIMIT_RESET: ("sent", "poisoned:retail_server_429"),
    F.THROTTLED: ("sent", "poisoned:retail_server_429"),
    F.SERVER_ERROR: ("sent", "poisoned:retail_server_500"),
    F.UNAVAILABLE: ("sent", "poisoned:retail_server_503"),
    F.TIMEOUT: ("sent", None),
    F.RESET: ("sent", "poisoned:retail_server_unreachable"),
    F.MALFORMED: ("sent", "poisoned:retail_server_unreadable"),
    F.REFUSED: ("sent", None),
    F.HANG: (None, "poisoned:retail_server_unreachable"),
}
_PROVIDER_DOWN = "poisoned:provider_unavailable"
# Entra ID throttled, failed, broke the connection or answered unreadably: transient, retried.
_ENTRA_DOWN = "poisoned:entra_unavailable"
_STORE_NOTIFY_SENT = {
    F.RETRY_AFTER: ("sent", "poisoned:StoreError"),
    F.RATELIMIT_RESET: ("-", "-"),
    F.THROTTLED: ("-", "-"),
    F.SERVER_ERROR: ("sent", "poisoned:StoreError"),
    F.UNAVAILABLE: ("sent", "poisoned:StoreError"),
    F.TIMEOUT: ("sent", None),
    F.RESET: ("sent", "poisoned:StoreError"),
    F.MALFORMED: ("-", "-"),
    F.REFUSED: ("-", None),
    F.HANG: (None, "-"),
}
# Key Vault rows: the sandbox's stand-in read through the app's own SecretClient. The SDK retries
# a single 429, 5xx or broken connection itself; it sleeps a Retry-After, which is longer than
# create_customer's deadline for the secret; a 401 without a challenge and a body that is not
# JSON are not retried. Key Vault did not answer in time or failed: retry later.
_SECRET_DOWN = "poisoned:key_vault_unavailable"
_KEY_VAULT_NOTIFY = {
    F.RETRY_AFTER: ("sent", _SECRET_DOWN),
    F.RATELIMIT_RESET: ("sent", _SECRET_DOWN),
    F.THROTTLED: ("sent", _SECRET_DOWN),
    F.SERVER_ERROR: ("sent", _SECRET_DOWN),
    F.UNAVAILABLE: ("sent", _SECRET_DOWN),
    F.TIMEOUT: ("sent", None),
    F.RESET: ("sent", _SECRET_DOWN),
    F.MALFORMED: ("sent", _SECRET_DOWN),
    F.REFUSED: ("sent", None),
    F.HANG: (None, _SECRET_DOWN),
}
_KEY_VAULT_CREATE = {
    F.RETRY_AFTER: ("http:503", "http:503"),
    F.RATELIMIT_RESET: ("sent", "http:503"),
    F.THROTTLED: ("sent", "http:503"),
    F.SERVER_ERROR: ("sent", "http:503"),
    F.UNAVAILABLE: ("sent", "http:503"),
    F.TIMEOUT: ("http:503", None),
    F.RESET: ("sent", "http:503"),
    F.MALFORMED: ("http:503", "http:503"),
    F.REFUSED: ("http:502", None),
    F.HANG: (None, "http:503"),
}

_ENTRA_SIGN_IN: dict[Fault, tuple[str | None, str | None]] = {
    F.RETRY_AFTER: ("sent", _ENTRA_DOWN),
    F.RATELIMIT_RESET: ("sent", _ENTRA_DOWN),
    F.THROTTLED: ("sent", _ENTRA_DOWN),
    F.SERVER_ERROR: ("sent", _ENTRA_DOWN),
    F.UNAVAILABLE: ("sent", _ENTRA_DOWN),
    F.TIMEOUT: ("sent", None),
    F.RESET: ("sent", _ENTRA_DOWN),
    F.MALFORMED: ("sent", _ENTRA_DOWN),
    F.REFUSED: ("sent", None),
    F.HANG: (None, _ENTRA_DOWN),
}

EXPECTED: dict[str, dict[Fault, tuple[str | None, str | None]]] = {
    "entra": _ENTRA_SIGN_IN,
    # ENTRA_CREDENTIAL=federated, no client secret anywhere: the platform's managed-identity
    # endpoint failing is Entra's sign-in failing (the error names the identity), retried.
    "managed-identity": _ENTRA_SIGN_IN,
    "retail-cart": _RETAIL_REQUIRED,
    "retail-customer": _RETAIL_REQUIRED,
    "retail-media": {
        F.RETRY_AFTER: ("sent", "degraded"),
        F.RATELIMIT_RESET: ("sent", "degraded"),
        F.THROTTLED: ("sent", "degraded"),
        F.SERVER_ERROR: ("sent", "degraded"),
        F.UNAVAILABLE: ("sent", "degraded"),
        F.TIMEOUT: ("sent", None),
        F.RESET: ("sent", "degraded"),
        F.MALFORMED: ("degraded", "degraded"),
        F.REFUSED: ("sent", None),
        F.HANG: (None, "degraded"),
    },
    "emarsys": {
        F.RETRY_AFTER: ("sent", _PROVIDER_DOWN),
        F.RATELIMIT_RESET: ("sent", _PROVIDER_DOWN),
        F.THROTTLED: ("sent", _PROVIDER_DOWN),
        F.SERVER_ERROR: ("sent", _PROVIDER_DOWN),
        F.UNAVAILABLE: ("sent", _PROVIDER_DOWN),
        F.TIMEOUT: ("sent", None),
        F.RESET: ("sent", "poisoned:provider_connection_lost"),
        F.MALFORMED: ("sent", _PROVIDER_DOWN),
        F.REFUSED: ("sent", None),
        F.HANG: (None, "poisoned:provider_timeout"),
    },
    "sendgrid": {
        F.RETRY_AFTER: ("sent", _PROVIDER_DOWN),
        F.RATELIMIT_RESET: ("sent", _PROVIDER_DOWN),
        F.THROTTLED: ("sent", _PROVIDER_DOWN),
        F.SERVER_ERROR: ("uncertain", "uncertain"),
        F.UNAVAILABLE: ("sent", _PROVIDER_DOWN),
        F.TIMEOUT: ("uncertain", None),
        F.RESET: ("uncertain", "uncertain"),
        F.MALFORMED: ("-", "-"),
        F.REFUSED: ("sent", None),
        F.HANG: (None, "uncertain"),
    },
    "webhook": {
        F.RETRY_AFTER: ("sent", _PROVIDER_DOWN),
        F.RATELIMIT_RESET: ("sent", _PROVIDER_DOWN),
        F.THROTTLED: ("sent", _PROVIDER_DOWN),
        F.SERVER_ERROR: ("sent", "poisoned:provider_http_500"),
        F.UNAVAILABLE: ("sent", _PROVIDER_DOWN),
        F.TIMEOUT: ("sent", None),
        F.RESET: ("sent", "poisoned:provider_connection_lost"),
        F.MALFORMED: ("-", "-"),
        F.REFUSED: ("sent", None),
        F.HANG: (None, "poisoned:provider_timeout"),
    },
    "keyvault": _KEY_VAULT_NOTIFY,
    "store-claim": _STORE_NOTIFY_SENT,
    "store-sent-webhook": _STORE_NOTIFY_SENT,
    "store-sent-sendgrid": {
        F.RETRY_AFTER: ("sent", "uncertain"),
        F.RATELIMIT_RESET: ("-", "-"),
        F.THROTTLED: ("-", "-"),
        F.SERVER_ERROR: ("sent", "uncertain"),
        F.UNAVAILABLE: ("sent", "uncertain"),
        F.TIMEOUT: ("sent", None),
        F.RESET: ("sent", "uncertain"),
        F.MALFORMED: ("-", "-"),
        F.REFUSED: ("-", None),
        F.HANG: (None, "-"),
    },
    "detect": {
        F.RETRY_AFTER: ("sent", "skipped:error:RetailServerError"),
        F.RATELIMIT_RESET: ("sent", "skipped:error:RetailServerError"),
        F.THROTTLED: ("sent", "skipped:error:RetailServerError"),
        F.SERVER_ERROR: ("sent", "skipped:error:RetailServerError"),
        F.UNAVAILABLE: ("sent", "skipped:error:RetailServerError"),
        F.TIMEOUT: ("sent", None),
        F.RESET: ("sent", "skipped:error:UpstreamConnectionError"),
        F.MALFORMED: (
            "skipped:error:RetailServerUnreadableError",
            "skipped:error:RetailServerUnreadableError",
        ),
        F.REFUSED: ("sent", None),
        F.HANG: (None, "skipped:error:UpstreamTimeoutError"),
    },
    "entra-fno": {
        F.RETRY_AFTER: ("http:503", "http:503"),
        F.RATELIMIT_RESET: ("http:503", "http:503"),
        F.THROTTLED: ("http:503", "http:503"),
        F.SERVER_ERROR: ("http:503", "http:503"),
        F.UNAVAILABLE: ("http:503", "http:503"),
        F.TIMEOUT: ("http:503", None),
        F.RESET: ("http:503", "http:503"),
        F.MALFORMED: ("http:503", "http:503"),
        # A refused credential is an administrator's fix, not a retry's.
        F.REFUSED: ("http:502", None),
        F.HANG: (None, "http:503"),
    },
    "fno": {
        F.RETRY_AFTER: ("sent", "http:503"),
        F.RATELIMIT_RESET: ("sent", "http:503"),
        F.THROTTLED: ("sent", "http:503"),
        F.SERVER_ERROR: ("http:502", "http:502"),
        F.UNAVAILABLE: ("sent", "http:503"),
        F.TIMEOUT: ("http:504", None),
        F.RESET: ("http:502", "http:502"),
        F.MALFORMED: ("http:502", "http:502"),
        F.REFUSED: ("sent", None),
        F.HANG: (None, "http:504"),
    },
    "keyvault-fno": _KEY_VAULT_CREATE,
    "store-idempotency": {
        F.RETRY_AFTER: ("http:503", "http:503"),
        F.RATELIMIT_RESET: ("-", "-"),
        F.THROTTLED: ("-", "-"),
        F.SERVER_ERROR: ("http:503", "http:503"),
        F.UNAVAILABLE: ("http:503", "http:503"),
        F.TIMEOUT: ("http:503", None),
        F.RESET: ("http:503", "http:503"),
        F.MALFORMED: ("-", "-"),
        F.REFUSED: ("-", None),
        F.HANG: (None, "-"),
    },
}


@dataclass(frozen=True)
class Expect:
    outcome: str
    detail: str | None
    pending_item: int | None
    # A target no planned change covers yet, found by this matrix (see docs/RELIABILITY.md).
    gap: bool = False

    @property
    def pending(self) -> bool:
        return self.pending_item is not None or self.gap

    @property
    def label(self) -> str:
        return self.outcome if self.detail is None else f"{self.outcome}:{self.detail}"


_CELL = re.compile(
    r"^(?P<outcome>[a-z]+)(?::(?P<detail>[^\[\s]+))?(?:\s*\[(?:item (?P<item>\d+)|(?P<gap>gap))\])?$"
)
OUTCOMES = frozenset({"sent", "degraded", "skipped", "poisoned", "uncertain", "http", "failed"})


def parse(text: str) -> Expect:
    match = _CELL.match(text.strip())
    if match is None or match["outcome"] not in OUTCOMES:
        raise ValueError(f"not a matrix cell: {text!r}")
    item = match["item"]
    return Expect(match["outcome"], match["detail"], int(item) if item else None, gap=bool(match["gap"]))


@dataclass(frozen=True)
class Cell:
    row: Row
    fault: Fault
    variant: Variant
    expect: Expect | None  # None: not applicable
    not_applicable: str | None = None

    @property
    def id(self) -> str:
        fault = self.fault.value.replace(" + ", "+").replace(" ", "-")
        return f"{self.row.id}|{fault}|{self.variant.value}"


def cells() -> list[Cell]:
    """Every cell of the matrix, in table order; not-applicable cells included (expect None)."""
    found: list[Cell] = []
    for row in ROWS:
        table = EXPECTED[row.id]
        if set(table) != set(Fault):
            raise ValueError(f"row {row.id} must name every fault; missing {set(Fault) - set(table)}")
        for fault in Fault:
            for variant, text in zip(Variant, table[fault], strict=True):
                if text is None:
                    continue
                if text == _NA:
                    reason = NOT_APPLICABLE.get((row.id, fault))
                    if reason is None:
                        raise ValueError(f"{row.id}/{fault}: '-' needs a reason in NOT_APPLICABLE")
                    found.append(Cell(row, fault, variant, None, reason))
                else:
                    found.append(Cell(row, fault, variant, parse(text)))
    return found
