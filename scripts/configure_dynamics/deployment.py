"""What the script knows about the deployment: the azd environment's values, then the command line.

``azd up`` writes the Bicep outputs (the identity's ids, the tenant) and every ``azd env set`` value
into ``.azure/<environment>/.env``; ``azd env get-values`` prints them as ``KEY="value"`` lines
(learn.microsoft.com/azure/developer/azure-developer-cli/environment-variables-faq). The script
reads them through azd, or from a file given with ``--env-file`` (where azd is not installed), and
writes back only ``ENTRA_CLIENT_ID`` with ``azd env set``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.managed_identity import token_exchange_audience

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_AUDIENCE = "https://commerce.dynamics.com"
DEFAULT_API_VERSION = "7.3"
AZD_TIMEOUT_SECONDS = 60.0


class DeploymentError(Exception):
    """A value the script needs is missing or cannot be read; the message says where to set it."""


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY="value"`` lines as azd writes them (double quotes, backslash escapes); others skipped."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _unescape(value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key] = value
    return values


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(following, "\\" + following))
    return "".join(out)


class Azd:
    """The ``azd`` command line, run as a child process (never through a shell)."""

    def __init__(self, environment: str | None, executable: str | None = None) -> None:
        self.environment = environment
        self.executable = executable or shutil.which("azd")

    @property
    def available(self) -> bool:
        return self.executable is not None

    def _args(self, *args: str) -> list[str]:
        if self.executable is None:
            raise DeploymentError("the Azure Developer CLI (azd) is not on PATH; pass --env-file instead")
        environment = ["-e", self.environment] if self.environment else []
        return [self.executable, *args, *environment]

    async def run(
        self, *args: str, deadline: float | None = AZD_TIMEOUT_SECONDS, capture: bool = True
    ) -> str:
        command = self._args(*args)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if capture else None,
            stderr=asyncio.subprocess.PIPE if capture else None,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), deadline)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise DeploymentError(f"`azd {' '.join(args)}` did not finish within {deadline:g}s") from None
        if process.returncode != 0:
            detail = (stderr or b"").decode(errors="replace").strip().splitlines()
            last = detail[-1] if detail else "no message"
            raise DeploymentError(f"`azd {' '.join(args)}` failed ({process.returncode}): {last}")
        return (stdout or b"").decode(errors="replace")

    async def values(self) -> dict[str, str]:
        return parse_dotenv(await self.run("env", "get-values"))

    async def set_value(self, key: str, value: str) -> None:
        await self.run("env", "set", key, value)

    async def provision(self) -> None:
        # Streams its progress to the terminal; provisioning takes minutes.
        await self.run("provision", "--no-prompt", deadline=None, capture=False)


@dataclass(frozen=True)
class Deployment:
    """The values of one deployment the Dynamics set-up needs, whatever their source."""

    environment_name: str | None
    tenant_id: str | None
    authority_host: str
    client_id: str | None
    identity_principal_id: str | None
    retail_server_url: str | None
    retail_server_audience: str
    retail_server_api_version: str
    operating_unit_numbers: tuple[str, ...]
    fno_url: str | None
    fno_client_id: str | None
    extra_ca_bundle: Path | None

    @classmethod
    def from_values(
        cls, values: Mapping[str, str], overrides: Mapping[str, str | Sequence[str] | None]
    ) -> Deployment:
        """Azd values (app-setting names and Bicep outputs), each replaced by a command-line override."""

        def pick(key: str, *names: str) -> str | None:
            override = overrides.get(key)
            if isinstance(override, str) and override.strip():
                return override.strip()
            for name in names:
                value = values.get(name, "").strip()
                if value:
                    return value
            return None

        ouns_override = overrides.get("operating_unit_numbers")
        if isinstance(ouns_override, Sequence) and not isinstance(ouns_override, str) and ouns_override:
            ouns = tuple(oun.strip() for oun in ouns_override if oun.strip())
        else:
            ouns = tuple(
                oun.strip() for oun in values.get("OPERATING_UNIT_NUMBERS", "").split(",") if oun.strip()
            )
        bundle = pick("extra_ca_bundle", "EXTRA_CA_BUNDLE")
        return cls(
            environment_name=pick("environment_name", "AZURE_ENV_NAME"),
            tenant_id=pick("tenant_id", "ENTRA_TENANT_ID", "AZURE_TENANT_ID"),
            authority_host=(pick("authority_host", "ENTRA_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST).rstrip(
                "/"
            ),
            client_id=pick("client_id", "ENTRA_CLIENT_ID"),
            identity_principal_id=pick("identity_principal_id", "AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID"),
            retail_server_url=(pick("retail_server_url", "RETAIL_SERVER_URL") or "").rstrip("/") or None,
            retail_server_audience=pick("retail_server_audience", "RETAIL_SERVER_AUDIENCE")
            or DEFAULT_AUDIENCE,
            retail_server_api_version=pick("api_version", "RETAIL_SERVER_API_VERSION") or DEFAULT_API_VERSION,
            operating_unit_numbers=ouns,
            fno_url=pick("fno_url", "FNO_URL"),
            fno_client_id=pick("fno_client_id", "FNO_CLIENT_ID"),
            extra_ca_bundle=Path(bundle) if bundle else None,
        )

    def require(self, value: str | None, what: str, where: str) -> str:
        if not value:
            raise DeploymentError(f"{what} is not known: {where}")
        return value

    @property
    def tenant(self) -> str:
        return self.require(
            self.tenant_id,
            "the tenant",
            "run `azd up` first (it outputs AZURE_TENANT_ID) or pass --tenant-id",
        )

    @property
    def federated_issuer(self) -> str:
        """The issuer of the managed identity's tokens: Entra's v2.0 issuer of the tenant."""
        return f"{self.authority_host}/{self.tenant}/v2.0"

    @property
    def token_exchange_audience(self) -> str:
        """The audience of the managed identity's tokens: the credential must name the very value
        the app presents, so it comes from the app's own code."""
        return token_exchange_audience(self.authority_host)


async def load(
    *, env_file: Path | None, azd: Azd, overrides: Mapping[str, str | Sequence[str] | None]
) -> tuple[Deployment, dict[str, str]]:
    """The deployment's values from ``--env-file``, else from azd when it is installed."""
    if env_file is not None:
        try:
            values = parse_dotenv(await asyncio.to_thread(env_file.read_text, encoding="utf-8"))
        except OSError as exc:
            raise DeploymentError(f"cannot read {env_file}: {exc.strerror}") from None
    elif azd.available:
        values = await azd.values()
    else:
        values = {}
    return Deployment.from_values(values, overrides), values
