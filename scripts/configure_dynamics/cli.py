"""Command line of ``python -m scripts.configure_dynamics``: ``configure`` and ``check``.

Both read the deployment from the azd environment (``azd env get-values``, or ``--env-file``) and
sign in to Microsoft Graph as the operator through the Azure CLI (``az login``), with
azure-identity's asynchronous ``AzureCliCredential``: nothing here holds a secret of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import aiohttp

from scripts.configure_dynamics import check as checks
from scripts.configure_dynamics import instructions
from scripts.configure_dynamics.deployment import Azd, Deployment, DeploymentError, load
from scripts.configure_dynamics.graph import DEFAULT_GRAPH_URL, Application, GraphClient, GraphError
from scripts.configure_dynamics.setup import (
    SetupError,
    configure,
    default_credential_name,
    default_display_name,
)
from shared.identity import unverified_claims

if TYPE_CHECKING:
    from azure.identity.aio import AzureCliCredential

Say = Callable[[str], None]
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ROLE_HINT = (
    "your account may not create or change app registrations in this tenant: it needs an Entra role "
    "such as Application Developer (to create) or Cloud Application Administrator, or ownership of the "
    "existing registration; or ask an administrator to run this command"
)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    source = common.add_argument_group("where the deployment's values come from")
    source.add_argument("--azd-env", metavar="NAME", help="azd environment to read (default: azd's default)")
    source.add_argument(
        "--env-file", type=Path, metavar="PATH", help="read KEY=value lines from this file instead of azd"
    )
    values = common.add_argument_group("values (each overrides the azd environment's)")
    values.add_argument("--tenant-id", help="Entra tenant (ENTRA_TENANT_ID, else AZURE_TENANT_ID)")
    values.add_argument("--client-id", help="the app registration's client id (ENTRA_CLIENT_ID)")
    values.add_argument(
        "--identity-principal-id",
        help="the function app identity's principal (object) id (AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID)",
    )
    values.add_argument("--retail-server-url", help="RETAIL_SERVER_URL")
    values.add_argument(
        "--audience", dest="retail_server_audience", help="server resource id (RETAIL_SERVER_AUDIENCE)"
    )
    values.add_argument("--authority-host", help="ENTRA_AUTHORITY_HOST, for a sovereign cloud")
    values.add_argument(
        "--graph-url", default=DEFAULT_GRAPH_URL, help=f"Microsoft Graph (default {DEFAULT_GRAPH_URL})"
    )
    values.add_argument(
        "--extra-ca-bundle", metavar="PEM", help="trust this CA too (EXTRA_CA_BUNDLE; the local sandbox only)"
    )

    root = argparse.ArgumentParser(
        prog="python -m scripts.configure_dynamics",
        description="Wire a deployed connector to Dynamics 365 Commerce: the Entra app registration and its "
        "federated credential, the values for headquarters and F&O, and a check against Retail Server.",
        epilog="Run `configure` after `azd up`, enter the printed values in headquarters, run job 1110, "
        "then `check`.",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="{configure,check}")
    setup = commands.add_parser(
        "configure",
        parents=[common],
        help="create or reuse the app registration and its federated credential; print the Dynamics values",
        description="Create or reuse the app registration, its service principal and the federated "
        "credential of the function app's managed identity; set ENTRA_CLIENT_ID in the azd environment "
        "(and run `azd provision` to apply it); print what to enter in headquarters and in F&O.",
    )
    setup.add_argument(
        "--dry-run", action="store_true", help="read only: print what would be created or changed"
    )
    setup.add_argument(
        "--display-name", help="name of a new app registration (default: D365 Commerce Connector (<env>))"
    )
    setup.add_argument(
        "--credential-name", help="name of the federated credential (default: commerce-connector-<env>)"
    )
    setup.add_argument(
        "--no-provision",
        action="store_true",
        help="set ENTRA_CLIENT_ID in the azd environment but leave `azd provision` to you",
    )
    verify = commands.add_parser(
        "check",
        parents=[common],
        help="get a real token and call OrgUnits/GetOrgUnitConfiguration once per channel",
        description="Request a token for Retail Server as the app registration and call "
        "OrgUnits/GetOrgUnitConfiguration once per operating unit number, explaining each failure.",
    )
    verify.add_argument(
        "--credential",
        choices=("temporary-secret", "secret"),
        default="temporary-secret",
        help="temporary-secret (default): add a one-hour client secret through Graph and remove it after the "
        "token request; secret: use ENTRA_CLIENT_SECRET from the environment",
    )
    verify.add_argument(
        "--oun",
        action="append",
        dest="operating_unit_numbers",
        metavar="OUN",
        help="channel to call (repeatable; default OPERATING_UNIT_NUMBERS)",
    )
    verify.add_argument(
        "--skip-graph",
        action="store_true",
        help="with --credential secret: do not read the app and its credential from Graph",
    )
    verify.add_argument(
        "--propagation-seconds",
        type=float,
        default=120.0,
        help="how long to keep asking for a token while a new secret spreads through Entra ID (default 120)",
    )
    return root


def _overrides(args: argparse.Namespace) -> dict[str, str | Sequence[str] | None]:
    names = (
        "tenant_id",
        "client_id",
        "identity_principal_id",
        "retail_server_url",
        "retail_server_audience",
        "authority_host",
        "extra_ca_bundle",
        "operating_unit_numbers",
    )
    return {name: getattr(args, name, None) for name in names}


def _ssl(deployment: Deployment) -> ssl.SSLContext | None:
    from shared.http import build_ssl_context

    return build_ssl_context(deployment.extra_ca_bundle) if deployment.extra_ca_bundle else None


def _credential(deployment: Deployment) -> AzureCliCredential:
    # The operator's own sign-in (`az login`); azure-identity runs the CLI as a child process.
    from azure.identity.aio import AzureCliCredential

    return AzureCliCredential(tenant_id=deployment.tenant)


async def run(argv: Sequence[str], out: TextIO | None = None) -> int:
    stream = out or sys.stdout

    def say(text: str = "") -> None:
        stream.write(text + "\n")
        stream.flush()

    try:
        args = parser().parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    azd = Azd(args.azd_env)
    try:
        deployment, values = await load(env_file=args.env_file, azd=azd, overrides=_overrides(args))
        if args.command == "configure":
            return await _configure(args, deployment, values, azd, say)
        return await _check(args, deployment, say)
    except GraphError as exc:
        say(f"error: {exc}")
        if exc.insufficient_privileges:
            say(f"  {ROLE_HINT}")
        return EXIT_FAILED
    except (DeploymentError, SetupError, checks.CheckFailedError) as exc:
        say(f"error: {exc}")
        return EXIT_USAGE if isinstance(exc, DeploymentError) else EXIT_FAILED
    except Exception as exc:
        from azure.core.exceptions import ClientAuthenticationError

        if isinstance(exc, ClientAuthenticationError):
            # Includes CredentialUnavailableError: the CLI is missing or signed out.
            say(
                f"error: no Azure CLI sign-in for Microsoft Graph ({type(exc).__name__}): "
                "run `az login --tenant <tenant>`"
            )
            return EXIT_USAGE
        raise


async def _configure(
    args: argparse.Namespace, deployment: Deployment, values: dict[str, str], azd: Azd, say: Say
) -> int:
    display_name = args.display_name or default_display_name(deployment)
    credential_name = args.credential_name or default_credential_name(deployment)
    say(
        f"Tenant {deployment.tenant}; function app identity {deployment.identity_principal_id or '(unknown)'}"
    )
    async with (
        _credential(deployment) as credential,
        GraphClient(credential, base_url=args.graph_url, ssl_context=_ssl(deployment)) as graph,
    ):
        outcome = await configure(
            graph,
            deployment,
            display_name=display_name,
            credential_name=credential_name,
            dry_run=args.dry_run,
        )
    for step in outcome.steps:
        say(f"  {step}")

    client_id = outcome.client_id
    stored = values.get("ENTRA_CLIENT_ID", "")
    can_write = azd.available and args.env_file is None
    if client_id and client_id != stored:
        if args.dry_run:
            say(f"  would set     ENTRA_CLIENT_ID={client_id} in the azd environment and run `azd provision`")
        elif can_write:
            await azd.set_value("ENTRA_CLIENT_ID", client_id)
            say(f"  set           ENTRA_CLIENT_ID={client_id} in the azd environment")
            if args.no_provision:
                say("  Run `azd provision` to give the function app the new ENTRA_CLIENT_ID.")
            else:
                say("  running       azd provision (the function app gets ENTRA_CLIENT_ID)")
                await azd.provision()
        else:
            say(f"  Set it yourself: azd env set ENTRA_CLIENT_ID {client_id} && azd provision")
    if args.dry_run:
        say("Dry run: nothing was changed.")
    if client_id:
        say(instructions.render(deployment, client_id=client_id, display_name=outcome.display_name))
    return EXIT_OK


async def _check(args: argparse.Namespace, deployment: Deployment, say: Say) -> int:
    client_id = deployment.require(
        deployment.client_id, "ENTRA_CLIENT_ID", "run `configure` first or pass --client-id"
    )
    ouns = deployment.operating_unit_numbers
    if not ouns:
        raise DeploymentError("no operating unit number: set OPERATING_UNIT_NUMBERS or pass --oun")
    deployment.require(
        deployment.retail_server_url, "RETAIL_SERVER_URL", "set it with azd or pass --retail-server-url"
    )
    issuer = instructions.identity_provider(deployment)
    say(
        f"Checking app {client_id} against {deployment.retail_server_url} (server resource id "
        f"{deployment.retail_server_audience}; channels {', '.join(ouns)})"
    )
    failures = 0
    use_graph = args.credential == "temporary-secret" or not args.skip_graph
    ssl_context = _ssl(deployment)
    async with checks.new_session(ssl_context) as session:
        if use_graph:
            async with (
                _credential(deployment) as credential,
                GraphClient(credential, base_url=args.graph_url, ssl_context=ssl_context) as graph,
            ):
                found, application = await _check_directory(graph, deployment, client_id, say)
                failures += found
                token = await _token(args, (graph, application), deployment, session, client_id)
        else:
            token = await _token(args, None, deployment, session, client_id)
        failures += _check_claims(token, deployment, client_id, say)
        refused = False
        for oun in ouns:
            result = await checks.call_channel(session, deployment, token=token, oun=oun)
            failures += 0 if result.ok else 1
            refused = refused or result.status == 401
            say(f"  {'ok  ' if result.ok else 'FAIL'} OUN {oun}: {result.detail}")
        if refused:
            audience = deployment.retail_server_audience
            say(
                "  "
                + checks.RETAIL_SERVER_401_HELP.format(client_id=client_id, issuer=issuer, audience=audience)
            )
    say("All checks passed." if failures == 0 else f"{failures} check(s) failed.")
    return EXIT_OK if failures == 0 else EXIT_FAILED


async def _check_directory(
    graph: GraphClient, deployment: Deployment, client_id: str, say: Say
) -> tuple[int, Application]:
    """The app registration, its service principal and its federated credential, read back: the
    failures counted, and the app registration."""
    applications = await graph.applications_by_app_id(client_id)
    if not applications:
        raise checks.CheckFailedError(
            f"no app registration has the client id {client_id} in tenant {deployment.tenant}"
        )
    principals = await graph.service_principals_by_app_id(client_id)
    failures = 0
    say(
        f"  {'ok  ' if principals else 'FAIL'} service principal: "
        + ("present" if principals else "missing; run `configure`")
    )
    failures += 0 if principals else 1
    subject = deployment.identity_principal_id
    if subject:
        credentials = await graph.federated_credentials(applications[0])
        match = any(
            (c.issuer, c.subject, c.audiences)
            == (deployment.federated_issuer, subject, [deployment.token_exchange_audience])
            for c in credentials
        )
        say(
            f"  {'ok  ' if match else 'FAIL'} federated credential for identity {subject}: "
            + ("present" if match else "missing or different; run `configure`")
        )
        failures += 0 if match else 1
    else:
        say("  skip federated credential: the identity's principal id is not known (run `azd up`)")
    return failures, applications[0]


async def _token(
    args: argparse.Namespace,
    directory: tuple[GraphClient, Application] | None,
    deployment: Deployment,
    session: aiohttp.ClientSession,
    client_id: str,
) -> str:
    if args.credential == "secret":
        secret = checks.secret_from_environment()
        return await checks.request_token(session, deployment, client_id=client_id, secret=secret)
    if directory is None:
        raise DeploymentError("--credential temporary-secret needs Microsoft Graph; drop --skip-graph")
    graph, application = directory
    temporary = checks.TemporarySecret(graph, application)
    try:
        secret = await temporary.add()
        return await checks.token_with_patience(
            lambda: checks.request_token(session, deployment, client_id=client_id, secret=secret),
            patience_seconds=args.propagation_seconds,
        )
    finally:
        # The token stays valid for its lifetime; the secret is not needed past this point.
        await asyncio.shield(temporary.remove())


def _check_claims(token: str, deployment: Deployment, client_id: str, say: Say) -> int:
    claims = unverified_claims(token)
    audience, app = str(claims.get("aud", "?")), str(claims.get("appid") or claims.get("azp") or "?")
    expected = deployment.retail_server_audience.rstrip("/")
    ok = audience.rstrip("/") == expected and app == client_id
    say(f"  {'ok  ' if ok else 'FAIL'} token: aud {audience}, appid {app}, tenant {claims.get('tid', '?')}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(sys.argv[1:] if argv is None else argv))
