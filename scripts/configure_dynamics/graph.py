"""The Microsoft Graph v1.0 calls of the set-up, signed in as the operator (Azure CLI).

Endpoints and fields as learn.microsoft.com/graph/api documents them: applications (list with
``$filter``, create), their federatedIdentityCredentials (list, create, update by id or name),
servicePrincipals (list with ``$filter``, create) and addPassword/removePassword. Every call has a
deadline; an error answer becomes ``GraphError`` with Graph's code and message, never a token.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class AsyncCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...


class GraphError(Exception):
    """Graph answered with an error, or not in a form the script understands."""

    def __init__(self, status: int, code: str, message: str, *, method: str, path: str) -> None:
        self.status = status
        self.code = code
        super().__init__(f"Microsoft Graph {method} {path} answered {status} {code}: {message}")

    @property
    def insufficient_privileges(self) -> bool:
        return self.status == 403 or self.code == "Authorization_RequestDenied"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class Application(_Model):
    object_id: str = Field(alias="id")
    app_id: str = Field(alias="appId")
    display_name: str = Field(alias="displayName")


class ServicePrincipal(_Model):
    object_id: str = Field(alias="id")
    app_id: str = Field(alias="appId")


class FederatedCredential(_Model):
    id: str
    name: str
    issuer: str
    subject: str
    audiences: list[str]


class Password(_Model):
    key_id: str = Field(alias="keyId")
    secret_text: str = Field(alias="secretText", repr=False)


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class GraphClient:
    """One aiohttp session to Graph; ``async with GraphClient(...) as graph``."""

    def __init__(
        self,
        credential: AsyncCredential,
        *,
        base_url: str = DEFAULT_GRAPH_URL,
        ssl_context: ssl.SSLContext | None = None,
        timeout_seconds: float = TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credential = credential
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    @property
    def scope(self) -> str:
        # The token audience of Graph is its own base URL (https://graph.microsoft.com).
        return f"{self.base_url}/.default"

    async def __aenter__(self) -> GraphClient:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl or True)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise RuntimeError("use 'async with GraphClient(...)'")
        token = await self._credential.get_token(self.scope)
        headers = {"Authorization": f"Bearer {token.token}", "Accept": "application/json"}
        try:
            async with self._session.request(
                method, f"{self.base_url}/v1.0/{path}", json=body, headers=headers
            ) as response:
                status = response.status
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GraphError(
                0,
                "Unreachable",
                f"{self.base_url} could not be reached ({type(exc).__name__})",
                method=method,
                path=path,
            ) from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise GraphError(status, "TooLarge", "the answer is too large", method=method, path=path)
        if status >= 400:
            code, message = _error_fields(raw)
            raise GraphError(status, code, message, method=method, path=path)
        if status == 204 or not raw:
            return None
        try:
            return TypeAdapter(Any).validate_json(raw)
        except ValidationError:
            raise GraphError(status, "NotJson", "the answer is not JSON", method=method, path=path) from None

    async def _list(self, path: str, model: type[_Model]) -> list[Any]:
        payload = await self._call("GET", path)
        try:
            items = payload["value"] if isinstance(payload, dict) else None
            return [model.model_validate(item) for item in items or []]
        except (ValidationError, TypeError):
            raise GraphError(
                200, "Unexpected", f"the answer is not a list of {model.__name__}", method="GET", path=path
            ) from None

    async def _one(self, method: str, path: str, model: type[_Model], body: dict[str, Any]) -> Any:
        payload = await self._call(method, path, body)
        try:
            return model.model_validate(payload)
        except ValidationError:
            raise GraphError(
                200, "Unexpected", f"the answer is not a {model.__name__}", method=method, path=path
            ) from None

    # ----- applications

    async def applications_by_app_id(self, app_id: str) -> list[Application]:
        return await self._list(f"applications?$filter=appId eq {quote(_odata_string(app_id))}", Application)

    async def applications_by_name(self, display_name: str) -> list[Application]:
        query = quote(f"displayName eq {_odata_string(display_name)}")
        return await self._list(f"applications?$filter={query}", Application)

    async def create_application(self, display_name: str) -> Application:
        body = {"displayName": display_name, "signInAudience": "AzureADMyOrg"}
        application: Application = await self._one("POST", "applications", Application, body)
        return application

    # ----- federated identity credentials

    async def federated_credentials(self, application: Application) -> list[FederatedCredential]:
        return await self._list(
            f"applications/{application.object_id}/federatedIdentityCredentials", FederatedCredential
        )

    async def create_federated_credential(
        self,
        application: Application,
        *,
        name: str,
        issuer: str,
        subject: str,
        audience: str,
        description: str,
    ) -> FederatedCredential:
        body = {
            "name": name,
            "issuer": issuer,
            "subject": subject,
            "audiences": [audience],
            "description": description,
        }
        path = f"applications/{application.object_id}/federatedIdentityCredentials"
        credential: FederatedCredential = await self._one("POST", path, FederatedCredential, body)
        return credential

    async def update_federated_credential(
        self,
        application: Application,
        credential: FederatedCredential,
        *,
        issuer: str,
        subject: str,
        audience: str,
    ) -> None:
        path = f"applications/{application.object_id}/federatedIdentityCredentials/{credential.id}"
        await self._call("PATCH", path, {"issuer": issuer, "subject": subject, "audiences": [audience]})

    # ----- service principals

    async def service_principals_by_app_id(self, app_id: str) -> list[ServicePrincipal]:
        return await self._list(
            f"servicePrincipals?$filter=appId eq {quote(_odata_string(app_id))}", ServicePrincipal
        )

    async def create_service_principal(self, app_id: str) -> ServicePrincipal:
        principal: ServicePrincipal = await self._one(
            "POST", "servicePrincipals", ServicePrincipal, {"appId": app_id}
        )
        return principal

    # ----- passwords (the check's short-lived one)

    async def add_password(self, application: Application, *, display_name: str, end: str) -> Password:
        body = {"passwordCredential": {"displayName": display_name, "endDateTime": end}}
        password: Password = await self._one(
            "POST", f"applications/{application.object_id}/addPassword", Password, body
        )
        return password

    async def remove_password(self, application: Application, key_id: str) -> None:
        await self._call("POST", f"applications/{application.object_id}/removePassword", {"keyId": key_id})


def _error_fields(raw: bytes) -> tuple[str, str]:
    try:
        error = TypeAdapter(dict[str, Any]).validate_json(raw).get("error")
    except ValidationError:
        error = None
    if isinstance(error, dict):
        return str(error.get("code") or "Unknown"), str(error.get("message") or "")[:500]
    return "Unknown", "the answer carries no Graph error"
