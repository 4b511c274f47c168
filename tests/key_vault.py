"""A runtime whose secrets come from the sandbox's Key Vault stand-in through the app's own
SecretClient (challenge flow, timeouts, retries), signed in with the sandbox's credential."""

from __future__ import annotations

from typing import Any

from sandbox import keyvault
from sandbox.server import Sandbox
from shared.runtime import Runtime
from shared.settings import Settings

# Key Vault route of the fault injector: every secret read.
SECRETS_ROUTE = "GET /secrets"


def key_vault_runtime(
    sandbox: Sandbox, settings: Settings, secrets: dict[str, str], **overrides: Any
) -> Runtime:
    """The runtime the host would build with ``KEY_VAULT_URL`` set to the stand-in holding ``secrets``."""
    vault = keyvault.stand_in(sandbox)
    vault.secrets.update(secrets)
    configured = settings.model_copy(update={"key_vault_url": vault.vault_url, **overrides})
    return Runtime.create(
        configured,
        key_vault_credential=keyvault.SandboxCredential(sandbox),
        verify_key_vault_challenge=False,
    )


def secret_reads(sandbox: Sandbox, name: str) -> int:
    """Requests that reached the vault for ``name`` (any version), the challenged one included."""
    path = f"GET /secrets/{name}"
    return sum(
        n for route, n in sandbox.stats.requests.items() if route == path or route.startswith(path + "/")
    )
