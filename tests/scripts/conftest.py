"""The operator's machine for ``scripts.configure_dynamics``: a sandbox with the Graph stand-in, and
``az`` and ``azd`` on PATH as small programs that answer the way the real ones do.

- ``az account get-access-token --output json --resource R [--tenant T]`` prints a token issued by
  the sandbox for the Graph stand-in (what azure-identity's AzureCliCredential runs and parses),
  or, after ``signed_out()``, fails the way the CLI does before ``az login``;
- ``azd env get-values`` prints the environment's ``KEY="value"`` lines, ``azd env set K V`` changes
  one, ``azd provision`` only records itself.

Every call is appended to ``calls.log`` as one line of JSON (its argv), for the tests to read.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox import graph as graph_module
from sandbox.entra import App
from sandbox.graph import GraphStandIn
from sandbox.server import Sandbox

AZURE_CLI_APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

_AZ = r"""
import json, pathlib, sys
here = pathlib.Path(__file__).parent
with (here / "calls.log").open("a") as log:
    log.write(json.dumps(["az", *sys.argv[1:]]) + "\n")
if (here / "signed-out").exists():
    sys.stderr.write("ERROR: Please run 'az login' to setup account.\n")
    raise SystemExit(1)
sys.stdout.write((here / "token.json").read_text())
"""

_AZD = r"""
import json, pathlib, sys
here = pathlib.Path(__file__).parent
with (here / "calls.log").open("a") as log:
    log.write(json.dumps(["azd", *sys.argv[1:]]) + "\n")
env = here / "azd.env"
values = json.loads(env.read_text())
args = [a for a in sys.argv[1:]]
if "-e" in args:
    i = args.index("-e"); del args[i:i + 2]
if args[:2] == ["env", "get-values"]:
    for key, value in values.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        sys.stdout.write(f'{key}="{escaped}"\n')
elif args[:2] == ["env", "set"]:
    values[args[2]] = args[3]
    env.write_text(json.dumps(values))
elif args[:1] == ["provision"]:
    sys.stdout.write("SUCCESS: provisioned\n")
else:
    sys.stderr.write("unknown command\n")
    raise SystemExit(2)
"""


@dataclass
class Operator:
    """The fake tools' folder and what they recorded."""

    bin: Path
    sandbox: Sandbox
    graph: GraphStandIn
    identity_principal_id: str

    def calls(self, tool: str) -> list[list[str]]:
        log = self.bin / "calls.log"
        if not log.exists():
            return []
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        return [line[1:] for line in lines if line[0] == tool]

    @property
    def azd_values(self) -> dict[str, str]:
        values: dict[str, str] = json.loads((self.bin / "azd.env").read_text())
        return values

    def set_azd(self, **values: str) -> None:
        (self.bin / "azd.env").write_text(json.dumps({**self.azd_values, **values}))

    def signed_out(self) -> None:
        (self.bin / "signed-out").touch()

    def remove_azd(self) -> None:
        (self.bin / "azd").unlink()

    @property
    def graph_url(self) -> str:
        return self.graph.resource

    def argv(self, *args: str) -> list[str]:
        """A command with the sandbox's Graph (the production default is graph.microsoft.com)."""
        return [*args, "--graph-url", self.graph_url]


def _tool(path: Path, source: str) -> None:
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(0o755)


@pytest.fixture
async def graph_sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, extensions=[graph_module.add_routes]) as running:
        yield running


@pytest.fixture
def operator(graph_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Operator:
    folder = tmp_path / "bin"
    folder.mkdir()
    _tool(folder / "az", _AZ)
    _tool(folder / "azd", _AZD)
    graph = graph_module.stand_in(graph_sandbox)
    # The operator's Graph token, as `az account get-access-token` prints it.
    cli_app = App(client_id=AZURE_CLI_APP_ID, secret="", object_id=str(uuid.uuid4()))
    token = graph_sandbox.tokens.issue(cli_app, graph.resource)
    expires = int(time.time()) + 3600
    (folder / "token.json").write_text(
        json.dumps(
            {
                "accessToken": token,
                "expires_on": expires,
                "subscription": str(uuid.uuid4()),
                "tenant": graph_sandbox.tenant_id,
                "tokenType": "Bearer",
            }
        )
    )
    principal = str(uuid.uuid4())
    # What `azd up` leaves in the environment (Bicep outputs and the operator's own values).
    (folder / "azd.env").write_text(
        json.dumps(
            {
                "AZURE_ENV_NAME": "commerce-test",
                "AZURE_TENANT_ID": graph_sandbox.tenant_id,
                "AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID": principal,
                "ENTRA_AUTHORITY_HOST": graph_sandbox.authority_host,
                "RETAIL_SERVER_URL": graph_sandbox.retail_server_url,
                "OPERATING_UNIT_NUMBERS": "128,067",
                "EXTRA_CA_BUNDLE": str(graph_sandbox.ca_path),
            }
        )
    )
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    monkeypatch.delenv("ENTRA_CLIENT_SECRET", raising=False)
    return Operator(folder, graph_sandbox, graph, principal)
