"""Microsoft Graph stand-in: the few application and service-principal calls the Dynamics set-up
script (``scripts/configure_dynamics``) makes, over the sandbox's HTTPS, under ``/graph/v1.0``.

Served, as Graph v1.0 documents them (learn.microsoft.com/graph/api: application-post-applications,
application-list, application-post-federatedidentitycredentials, federatedidentitycredential-update,
serviceprincipal-post-serviceprincipals, application-addpassword, application-removepassword):

- ``GET /applications?$filter=appId eq '<id>'`` or ``displayName eq '<name>'`` -> ``{"value": [...]}``;
  ``POST /applications`` ``{"displayName", "signInAudience"}`` -> 201 with ``id`` (object id) and ``appId``;
- ``GET|POST /applications/{id}/federatedIdentityCredentials`` (``name``, ``issuer``, ``subject``,
  ``audiences`` with exactly one value; issuer and subject unique per app, at most 20 per app) and
  ``PATCH /applications/{id}/federatedIdentityCredentials/{id or name}`` -> 204;
- ``GET /servicePrincipals?$filter=appId eq '<id>'``, ``POST /servicePrincipals`` ``{"appId"}`` -> 201;
- ``POST /applications/{id}/addPassword`` -> 200 ``{keyId, secretText, hint, endDateTime, ...}`` and
  ``POST /applications/{id}/removePassword`` ``{"keyId"}`` -> 204.

Every call needs ``Authorization: Bearer <jwt>`` from the sandbox's issuer with the audience
``{sandbox}/graph`` (the Graph resource of this "cloud"; Graph itself is ``https://graph.microsoft.com``).
Errors are Graph's shape, ``{"error": {"code", "message", "innerError"}}``. ``writable = False``
answers every write 403 ``Authorization_RequestDenied``, as Graph does for an operator without an
Entra role that may create applications.

The stand-in is joined to the Entra ID stand-in: an app registration with a service principal and a
password becomes an app that can get tokens (``Sandbox.register_app``) with its newest password, and
the object id of its service principal is the ``oid`` of those tokens. Commerce headquarters is not
here: putting the client id on Retail Server's relying-party list stays the test's (the
operator's) step, ``sandbox.relying_parties.add(client_id)``.

Enable it with ``Sandbox(extensions=[sandbox.graph.add_routes])``; find it with ``stand_in(sandbox)``.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.entra import TokenRejectedError, service_principal_id

if TYPE_CHECKING:
    from sandbox.server import Sandbox

ROOT = "/graph/v1.0"
STAND_IN_KEY: web.AppKey[GraphStandIn] = web.AppKey("graph_stand_in")
MAX_FEDERATED_CREDENTIALS = 20
_FILTER = re.compile(r"^(appId|displayName) eq '((?:[^']|'')*)'$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$")


_STATUSES: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
}


def graph_error(status: int, code: str, message: str) -> web.HTTPException:
    """Graph's error answer (``error.code``, ``error.message``, ``innerError``), raised by a handler."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    inner = {"date": now, "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return _STATUSES[status](text=json.dumps(body), content_type="application/json")


@dataclass
class FederatedCredential:
    id: str
    name: str
    issuer: str
    subject: str
    audiences: list[str]
    description: str | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "issuer": self.issuer,
            "subject": self.subject,
            "audiences": list(self.audiences),
            "description": self.description,
        }


@dataclass
class Password:
    key_id: str
    secret_text: str
    display_name: str | None
    end: datetime


@dataclass
class Application:
    id: str
    app_id: str
    display_name: str
    sign_in_audience: str
    federated: list[FederatedCredential] = field(default_factory=list)
    passwords: list[Password] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "appId": self.app_id,
            "displayName": self.display_name,
            "signInAudience": self.sign_in_audience,
            "passwordCredentials": [
                {
                    "keyId": p.key_id,
                    "displayName": p.display_name,
                    "hint": p.secret_text[:3],
                    "endDateTime": _iso(p.end),
                }
                for p in self.passwords
            ],
        }


@dataclass
class ServicePrincipal:
    id: str
    app_id: str
    display_name: str

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "appId": self.app_id, "displayName": self.display_name}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class GraphStandIn:
    sandbox: Sandbox
    applications: dict[str, Application] = field(default_factory=dict)
    service_principals: dict[str, ServicePrincipal] = field(default_factory=dict)
    # False: the signed-in operator may read but not create or change applications.
    writable: bool = True
    # Writes served, as "METHOD what", for tests to count.
    writes: list[str] = field(default_factory=list)

    @property
    def resource(self) -> str:
        """The audience a Graph token must carry here."""
        return f"{self.sandbox.base_url}/graph"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(ROOT + "/applications", self.list_applications)
        app.router.add_post(ROOT + "/applications", self.create_application)
        base = ROOT + "/applications/{object_id}"
        app.router.add_get(base + "/federatedIdentityCredentials", self.list_federated)
        app.router.add_post(base + "/federatedIdentityCredentials", self.create_federated)
        app.router.add_patch(base + "/federatedIdentityCredentials/{key}", self.update_federated)
        app.router.add_post(base + "/addPassword", self.add_password)
        app.router.add_post(base + "/removePassword", self.remove_password)
        app.router.add_get(ROOT + "/servicePrincipals", self.list_service_principals)
        app.router.add_post(ROOT + "/servicePrincipals", self.create_service_principal)

    # ----- directory set-up for tests

    def add_application(self, display_name: str, *, app_id: str | None = None) -> Application:
        """An app registration that exists before the script runs (no service principal yet)."""
        application = Application(
            id=str(uuid.uuid4()),
            app_id=app_id or str(uuid.uuid4()),
            display_name=display_name,
            sign_in_audience="AzureADMyOrg",
        )
        self.applications[application.id] = application
        return application

    def by_app_id(self, app_id: str) -> Application | None:
        return next((a for a in self.applications.values() if a.app_id == app_id), None)

    # ----- handlers

    def _authorize(self, request: web.Request, *, write: bool) -> None:
        try:
            self.sandbox.authenticate(request, audience=self.resource, scheme="Bearer")
        except TokenRejectedError as exc:
            raise graph_error(
                401, "InvalidAuthenticationToken", f"Access token validation failure: {exc}."
            ) from None
        if write and not self.writable:
            raise graph_error(
                403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
            )
        if write:
            self.writes.append(f"{request.method} {request.path}")

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            raise graph_error(400, "BadRequest", "Unable to read JSON request payload.") from None
        if not isinstance(body, dict):
            raise graph_error(400, "BadRequest", "The request body must be a JSON object.")
        return body

    def _application(self, request: web.Request) -> Application:
        application = self.applications.get(request.match_info["object_id"])
        if application is None:
            raise graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{request.match_info['object_id']}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        return application

    @staticmethod
    def _filter(request: web.Request) -> tuple[str, str]:
        raw = request.query.get("$filter", "")
        match = _FILTER.match(raw)
        if match is None:
            raise graph_error(
                400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause: {raw}"
            )
        return match.group(1), match.group(2).replace("''", "'")

    async def list_applications(self, request: web.Request) -> web.Response:
        self._authorize(request, write=False)
        key, value = self._filter(request)
        attribute = "app_id" if key == "appId" else "display_name"
        found = [a.wire() for a in self.applications.values() if getattr(a, attribute) == value]
        return web.json_response({"@odata.context": "$metadata#applications", "value": found})

    async def create_application(self, request: web.Request) -> web.Response:
        self._authorize(request, write=True)
        body = await self._json(request)
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise graph_error(400, "Request_BadRequest", "Property 'displayName' is required.")
        application = self.add_application(name)
        application.sign_in_audience = str(body.get("signInAudience") or "AzureADMyOrg")
        return web.json_response(application.wire(), status=201)

    async def list_federated(self, request: web.Request) -> web.Response:
        self._authorize(request, write=False)
        application = self._application(request)
        return web.json_response({"value": [f.wire() for f in application.federated]})

    def _validate_federated(
        self, application: Application, fields: dict[str, Any], *, skip: str | None
    ) -> None:
        audiences = fields.get("audiences")
        if not isinstance(audiences, list) or len(audiences) != 1:
            raise graph_error(400, "Request_BadRequest", "Property 'audiences' must hold exactly one value.")
        for name in ("issuer", "subject"):
            if not isinstance(fields.get(name), str) or not fields[name]:
                raise graph_error(400, "Request_BadRequest", f"Property '{name}' is required.")
        for other in application.federated:
            if other.id != skip and (other.issuer, other.subject) == (fields["issuer"], fields["subject"]):
                raise graph_error(
                    400,
                    "Request_BadRequest",
                    "FederatedIdentityCredential with the same issuer and subject already exists.",
                )

    async def create_federated(self, request: web.Request) -> web.Response:
        self._authorize(request, write=True)
        application = self._application(request)
        body = await self._json(request)
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise graph_error(400, "Request_BadRequest", "Property 'name' is invalid.")
        if any(f.name == name for f in application.federated):
            raise graph_error(
                400, "Request_BadRequest", f"FederatedIdentityCredential with name {name} already exists."
            )
        if len(application.federated) >= MAX_FEDERATED_CREDENTIALS:
            raise graph_error(400, "Request_BadRequest", "Maximum number of federated identity credentials.")
        self._validate_federated(application, body, skip=None)
        credential = FederatedCredential(
            id=str(uuid.uuid4()),
            name=name,
            issuer=body["issuer"],
            subject=body["subject"],
            audiences=list(body["audiences"]),
            description=body.get("description"),
        )
        application.federated.append(credential)
        return web.json_response(credential.wire(), status=201)

    async def update_federated(self, request: web.Request) -> web.Response:
        self._authorize(request, write=True)
        application = self._application(request)
        key = request.match_info["key"]
        credential = next((f for f in application.federated if key in (f.id, f.name)), None)
        if credential is None:
            raise graph_error(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
        body = await self._json(request)
        if "name" in body and body["name"] != credential.name:
            raise graph_error(400, "Request_BadRequest", "Property 'name' is immutable.")
        merged = {**credential.wire(), **body}
        self._validate_federated(application, merged, skip=credential.id)
        credential.issuer, credential.subject = merged["issuer"], merged["subject"]
        credential.audiences = list(merged["audiences"])
        credential.description = merged.get("description")
        return web.Response(status=204)

    async def list_service_principals(self, request: web.Request) -> web.Response:
        self._authorize(request, write=False)
        key, value = self._filter(request)
        if key != "appId":
            raise graph_error(400, "Request_UnsupportedQuery", "Only appId is filterable here.")
        found = [sp.wire() for sp in self.service_principals.values() if sp.app_id == value]
        return web.json_response({"value": found})

    async def create_service_principal(self, request: web.Request) -> web.Response:
        self._authorize(request, write=True)
        body = await self._json(request)
        app_id = body.get("appId")
        application = self.by_app_id(str(app_id)) if isinstance(app_id, str) else None
        if application is None:
            raise graph_error(
                400,
                "Request_BadRequest",
                "The appId of the service principal does not reference a valid application object.",
            )
        if any(sp.app_id == app_id for sp in self.service_principals.values()):
            raise graph_error(
                409, "Request_MultipleObjectsWithSameKeyValue", "The service principal exists already."
            )
        # The object id the Entra stand-in puts in the app's tokens as oid.
        principal_id = service_principal_id(application.app_id)
        principal = ServicePrincipal(principal_id, application.app_id, application.display_name)
        self.service_principals[principal_id] = principal
        self._sync(application)
        return web.json_response(principal.wire(), status=201)

    async def add_password(self, request: web.Request) -> web.Response:
        self._authorize(request, write=True)
        application = self._application(request)
        body = await self._json(request)
        options = body.get("passwordCredential") or {}
        end_text = options.get("endDateTime")
        try:
            end = (
                datetime.fromisoformat(end_text.replace("Z", "+00:00"))
                if isinstance(end_text, str)
                else datetime.now(UTC) + timedelta(days=730)
            )
        except ValueError:
            raise graph_error(400, "Request_BadRequest", "Invalid value for 'endDateTime'.") from None
        password = Password(
            key_id=str(uuid.uuid4()),
            secret_text=secrets.token_urlsafe(30),
            display_name=options.get("displayName"),
            end=end,
        )
        application.passwords.append(password)
        self._sync(application)
        return web.json_response(
            {
                "customKeyIdentifier": None,
                "displayName": password.display_name,
                "endDateTime": _iso(password.end),
                "hint": password.secret_text[:3],
                "keyId": password.key_id,
                "secretText": password.secret_text,
                "startDateTime": _iso(datetime.now(UTC)),
            }
        )

    async def remove_password(self, request: web.Request) -> web.Response:
        self._authorize(request, write=True)
        application = self._application(request)
        key_id = (await self._json(request)).get("keyId")
        if not any(p.key_id == key_id for p in application.passwords):
            raise graph_error(400, "Request_BadRequest", "No password credential has the keyId given.")
        application.passwords = [p for p in application.passwords if p.key_id != key_id]
        self._sync(application)
        return web.Response(status=204)

    def _sync(self, application: Application) -> None:
        """What the Entra stand-in knows of the app: its newest password, once it has a principal."""
        has_principal = any(sp.app_id == application.app_id for sp in self.service_principals.values())
        relying_party = application.app_id in self.sandbox.relying_parties
        if has_principal and application.passwords:
            self.sandbox.register_app(
                application.app_id, application.passwords[-1].secret_text, relying_party=relying_party
            )
        elif application.app_id in self.sandbox.apps:
            # No usable password any more: a secret nobody holds.
            self.sandbox.register_app(
                application.app_id, secrets.token_urlsafe(30), relying_party=relying_party
            )


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    """The sandbox extension: an empty directory under ``/graph/v1.0``."""
    graph = GraphStandIn(sandbox)
    graph.add_routes(app)
    app[STAND_IN_KEY] = graph


def stand_in(sandbox: Sandbox) -> GraphStandIn:
    """The Graph stand-in of a sandbox started with ``extensions=[add_routes]``."""
    graph = sandbox.app.get(STAND_IN_KEY)
    if not isinstance(graph, GraphStandIn):
        raise RuntimeError("this sandbox has no Graph stand-in; pass extensions=[sandbox.graph.add_routes]")
    return graph
