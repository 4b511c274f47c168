"""Finance & Operations stand-in under ``/fno``: the CreateCustomer custom service and ``CustomersV3``.

It behaves as the reference describes F&O (reference/retail-server.md, 6 and 6.1):

- ``Authorization: Bearer <jwt>`` whose ``aud`` is the environment URL exactly (this stand-in's
  base URL, lower case, no trailing slash) from an app mapped under *Microsoft Entra
  applications*; anything else is 401, as F&O answers it.
- ``POST /fno/api/services/CreateCustomerServiceGroup/CreateCustomerService/CreateCustomer`` takes
  the partner's ``{"Customer": {...}}`` payload. A wrong shape or an unknown company is the
  service's own 400; an email that a customer of the company already has is an X++ duplicate-key
  exception, which F&O can only report as HTTP 500 with its ``Message``/``ExceptionType`` body.
  Success answers ``{"$id": "1", "customerAccNum": "..."}`` (JSON.NET adds the ``$id``).
- ``GET /fno/data/CustomersV3`` with ``$filter`` on ``dataAreaId`` and ``PrimaryContactEmail``
  (``eq`` only, joined by ``and``), ``$select``, ``$top`` and ``cross-company``.

Latency, error statuses and timeouts come from the sandbox's fault middleware; ``creations``
counts the customers actually created, so tests can prove exactly-once.

Enable it with ``Sandbox(extensions=[sandbox.fno.add_routes])`` and find it with ``stand_in(sandbox)``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.correlation import request_id
from sandbox.entra import TokenRejectedError

if TYPE_CHECKING:
    from sandbox.server import Sandbox

PREFIX = "/fno"
# Hosts are case-insensitive, so F&O answers whatever case FNO_URL is written in; the stand-in's
# "host" is its path prefix, so that prefix matches in any case.
_PREFIX_ROUTE = "/{environment:[Ff][Nn][Oo]}"
CREATE_CUSTOMER_PATH = "/api/services/CreateCustomerServiceGroup/CreateCustomerService/CreateCustomer"
LEGAL_ENTITIES = frozenset({"USRT", "USMF", "DEMF", "GBSI", "FRRT"})
SEEDED_LEGAL_ENTITY = "USRT"
CURRENCIES = frozenset({"USD", "EUR", "GBP", "CAD", "DKK", "CHF"})
FIRST_NEW_ACCOUNT = 100_001
_INVOKE = "An exception occured when invoking the operation - "
_CLAUSE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s+eq\s+'((?:[^']|'')*)'\s*")

STAND_IN_KEY = web.AppKey("sandbox.fno", object)


def fno_url(sandbox: Sandbox) -> str:
    """The environment URL of the stand-in (what FNO_URL is set to)."""
    return f"{sandbox.base_url}{PREFIX}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AddressIn(_Strict):
    Addresstitle: str | None = Field(default=None, max_length=60)
    Street: str = Field(min_length=1, max_length=250)
    Addresstype: str
    PrimaryAddress: str
    PostalCode: str | None = Field(default=None, max_length=10)
    City: str | None = Field(default=None, max_length=60)
    Country: str | None = Field(default=None, max_length=60)
    CountryCode: str = Field(min_length=3, max_length=3)
    State: str | None = Field(default=None, max_length=10)


class CustomerIn(_Strict):
    LegalEntity: str = Field(min_length=1, max_length=4)
    FirstName: str = Field(min_length=1, max_length=25)
    MiddleName: str | None = Field(default=None, max_length=25)
    LastName: str = Field(min_length=1, max_length=25)
    ContactNumber: str | None = Field(default=None, max_length=255)
    CurrencyCode: str = Field(min_length=3, max_length=3)
    EmailAddress: str | None = Field(default=None, max_length=255)
    DateOfBirth: str | None = None
    Gender: str | None = None
    BillingAddress: list[AddressIn] = Field(default_factory=list)
    ShippingAddress: list[AddressIn] = Field(default_factory=list)


class CreateCustomerIn(_Strict):
    Customer: CustomerIn


@dataclass
class CreatedCustomer:
    account: str
    legal_entity: str
    email: str | None
    payload: dict[str, Any]


@dataclass
class FinanceOpsStandIn:
    sandbox: Sandbox
    # Client ids registered under System administration > Setup > Microsoft Entra applications.
    entra_applications: set[str] = field(default_factory=set)
    customers: list[CreatedCustomer] = field(default_factory=list)
    creations: int = 0
    _next_account: int = FIRST_NEW_ACCOUNT
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def audience(self) -> str:
        return fno_url(self.sandbox).lower()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(_PREFIX_ROUTE + CREATE_CUSTOMER_PATH, self.create_customer)
        app.router.add_get(_PREFIX_ROUTE + "/data/CustomersV3", self.customers_v3)

    # ----- auth

    def _authorize(self, request: web.Request) -> web.Response | None:
        try:
            claims = self.sandbox.authenticate(request, audience=self.audience, scheme="Bearer")
        except TokenRejectedError:
            # F&O answers a bad token with an empty 401, whatever the reason.
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        if claims.get("appid") not in self.entra_applications:
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        return None

    # ----- CreateCustomer

    async def create_customer(self, request: web.Request) -> web.Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        try:
            raw = await request.json()
        except ValueError:
            return _fno_400("The request content is not valid JSON.")
        try:
            customer = CreateCustomerIn.model_validate(raw).Customer
        except ValidationError as exc:
            return _fno_400(_describe(exc))
        if customer.LegalEntity.upper() not in LEGAL_ENTITIES:
            return _fno_400(f"Company '{customer.LegalEntity}' does not exist.")
        if customer.CurrencyCode.upper() not in CURRENCIES:
            return _fno_400(f"Currency code {customer.CurrencyCode} does not exist.")
        async with self._lock:
            entity = customer.LegalEntity.upper()
            email = customer.EmailAddress
            if email and self.find(entity, email) is not None:
                return _duplicate_key(request, entity)
            account = f"{self._next_account:06d}"
            self._next_account += 1
            self.customers.append(CreatedCustomer(account, entity, email, raw))
            self.creations += 1
        return web.json_response({"$id": "1", "customerAccNum": account})

    def find(self, legal_entity: str, email: str) -> str | None:
        """The account of a customer of ``legal_entity`` with this email (seeded or created)."""
        wanted = email.casefold()
        for created in self.customers:
            if created.legal_entity == legal_entity.upper() and (created.email or "").casefold() == wanted:
                return created.account
        if legal_entity.upper() == SEEDED_LEGAL_ENTITY:
            for seeded in self.sandbox.data.customers.values():
                if (seeded.email or "").casefold() == wanted:
                    return seeded.account_number
        return None

    # ----- CustomersV3

    async def customers_v3(self, request: web.Request) -> web.Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        clauses = _parse_filter(request.query.get("$filter", ""))
        if clauses is None or set(clauses) - {"dataAreaId", "PrimaryContactEmail"}:
            return _odata_error(
                400,
                "The query specified in the URI is not valid (only eq on dataAreaId "
                "and PrimaryContactEmail, joined by 'and', is supported here).",
            )
        cross_company = request.query.get("cross-company", "").lower() == "true"
        entity = clauses.get("dataAreaId", SEEDED_LEGAL_ENTITY if not cross_company else "")
        rows: list[dict[str, Any]] = []
        email = clauses.get("PrimaryContactEmail")
        entities = [entity.upper()] if entity else sorted(LEGAL_ENTITIES)
        for candidate in entities:
            account = self.find(candidate, email) if email is not None else None
            if account is not None:
                rows.append(
                    {
                        "dataAreaId": candidate.lower(),
                        "CustomerAccount": account,
                        "PrimaryContactEmail": email,
                    }
                )
        top = request.query.get("$top")
        if top is not None and top.isdigit():
            rows = rows[: int(top)]
        return web.json_response(
            {"@odata.context": f"{fno_url(self.sandbox)}/data/$metadata#CustomersV3", "value": rows}
        )


def _parse_filter(text: str) -> dict[str, str] | None:
    """``Field eq 'value' and ...`` as a dict, or None when the filter is anything else."""
    clauses: dict[str, str] = {}
    position = 0
    while True:
        match = _CLAUSE.match(text, position)
        if match is None:
            return None
        clauses[match.group(1)] = match.group(2).replace("''", "'")
        position = match.end()
        if position == len(text):
            return clauses
        if not text.startswith("and ", position):
            return None
        position += 4


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"])
        parts.append(f"{path}: {error['msg']}")
    return "Invalid request: " + "; ".join(parts)


def _fno_400(message: str) -> web.Response:
    return web.json_response({"Message": message}, status=400)


def _duplicate_key(request: web.Request, legal_entity: str) -> web.Response:
    body = {
        "Message": f"{_INVOKE}Cannot create a record in Customers (CustTable) in company {legal_entity}. "
        "The record already exists.",
        "ExceptionType": "Microsoft.Dynamics.Ax.Xpp.DuplicateKeyException",
        "ActivityId": request_id(request),
        "StackTrace": "   at Dynamics.AX.Application.CustTable.insert()\n"
        "   at Dynamics.AX.Application.CreateCustomerService.CreateCustomer()",
    }
    return web.json_response(body, status=500)


def _odata_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": "", "message": message}}, status=status)


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    """The sandbox extension: serve F&O under ``/fno`` with the sandbox's own client mapped."""
    fno = FinanceOpsStandIn(sandbox, entra_applications={sandbox.client_id})
    fno.add_routes(app)
    app[STAND_IN_KEY] = fno


def stand_in(sandbox: Sandbox) -> FinanceOpsStandIn:
    """The F&O stand-in of a sandbox started with ``extensions=[add_routes]``."""
    fno = sandbox.app.get(STAND_IN_KEY)
    if not isinstance(fno, FinanceOpsStandIn):
        raise RuntimeError("this sandbox has no F&O stand-in; pass extensions=[sandbox.fno.add_routes]")
    return fno
