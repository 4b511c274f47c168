"""Create or reuse the app registration, its service principal and its federated credential.

Each step looks first and writes only what is missing or wrong, so the command can run again after
every ``azd up``: a re-created managed identity (``azd down`` then ``azd up``) has a new principal
id, and its credential is updated in place. In dry-run mode the same reads happen and every write
is reported as what it would be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scripts.configure_dynamics.deployment import Deployment
from scripts.configure_dynamics.graph import Application, FederatedCredential, GraphClient

DEFAULT_DISPLAY_NAME = "D365 Commerce Connector"


class SetupError(Exception):
    """The directory is not in a state the script may change on its own; the message says why."""


@dataclass(frozen=True)
class Step:
    verb: str
    what: str

    def __str__(self) -> str:
        return f"{self.verb:<13} {self.what}"


@dataclass
class Outcome:
    """What the directory holds (or would hold) after the run."""

    application: Application | None
    display_name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def client_id(self) -> str | None:
        return self.application.app_id if self.application is not None else None


def default_display_name(deployment: Deployment) -> str:
    env = deployment.environment_name
    return f"{DEFAULT_DISPLAY_NAME} ({env})" if env else DEFAULT_DISPLAY_NAME


def default_credential_name(deployment: Deployment) -> str:
    """A URL-friendly name, at most 120 characters (Graph's rule for the credential's name)."""
    suffix = re.sub(r"[^A-Za-z0-9_-]+", "-", deployment.environment_name or "default").strip("-") or "default"
    return f"commerce-connector-{suffix}"[:120]


async def configure(
    graph: GraphClient, deployment: Deployment, *, display_name: str, credential_name: str, dry_run: bool
) -> Outcome:
    subject = deployment.require(
        deployment.identity_principal_id,
        "the managed identity's principal id",
        "run `azd up` first (it outputs AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID) "
        "or pass --identity-principal-id",
    )
    would = "would " if dry_run else ""
    outcome = Outcome(application=None, display_name=display_name)

    # 1. The app registration: the one ENTRA_CLIENT_ID names, else the one of this display name.
    if deployment.client_id:
        found = await graph.applications_by_app_id(deployment.client_id)
        if not found:
            raise SetupError(
                f"ENTRA_CLIENT_ID {deployment.client_id} names no app registration in tenant "
                f'{deployment.tenant}: check the tenant, or clear it (`azd env set ENTRA_CLIENT_ID ""`) '
                "to have one created"
            )
        outcome.application = found[0]
        outcome.display_name = found[0].display_name
        outcome.steps.append(Step("reused", f"app registration {found[0].display_name} ({found[0].app_id})"))
    else:
        found = await graph.applications_by_name(display_name)
        if len(found) > 1:
            ids = ", ".join(app.app_id for app in found)
            raise SetupError(
                f"{len(found)} app registrations are named {display_name!r} ({ids}): pass --client-id"
            )
        if found:
            outcome.application = found[0]
            outcome.steps.append(Step("reused", f"app registration {display_name} ({found[0].app_id})"))
        elif dry_run:
            outcome.steps.append(Step(f"{would}create", f"app registration {display_name} (single tenant)"))
        else:
            outcome.application = await graph.create_application(display_name)
            outcome.steps.append(
                Step("created", f"app registration {display_name} ({outcome.application.app_id})")
            )

    application = outcome.application

    # 2. Its service principal: without one the tenant issues the app no token (AADSTS7000229).
    principals = await graph.service_principals_by_app_id(application.app_id) if application else []
    if principals:
        outcome.steps.append(Step("reused", f"service principal {principals[0].object_id}"))
    elif application is None or dry_run:
        outcome.steps.append(Step(f"{would}create", "its service principal (enterprise application)"))
    else:
        principal = await graph.create_service_principal(application.app_id)
        outcome.steps.append(Step("created", f"service principal {principal.object_id}"))

    # 3. The federated credential that lets the function app's managed identity sign in as the app.
    issuer, audience = deployment.federated_issuer, deployment.token_exchange_audience
    described = (
        f"federated credential {credential_name} (issuer {issuer}, subject {subject}, audience {audience})"
    )
    credentials = await graph.federated_credentials(application) if application else []
    same = [c for c in credentials if (c.issuer, c.subject) == (issuer, subject)]
    named = [c for c in credentials if c.name == credential_name]
    if same and same[0].audiences == [audience]:
        outcome.steps.append(Step("reused", f"federated credential {same[0].name} (subject {subject})"))
    elif same or named:
        target: FederatedCredential = (same or named)[0]
        if application is not None and not dry_run:
            await graph.update_federated_credential(
                application, target, issuer=issuer, subject=subject, audience=audience
            )
        previous = (
            f"subject {target.subject}" if target.subject != subject else f"audiences {target.audiences}"
        )
        outcome.steps.append(Step(f"{would}update", f"{described}; it had {previous}"))
    elif application is None or dry_run:
        outcome.steps.append(Step(f"{would}create", described))
    else:
        await graph.create_federated_credential(
            application,
            name=credential_name,
            issuer=issuer,
            subject=subject,
            audience=audience,
            description="The D365 Commerce Connector's function app (its user-assigned managed identity).",
        )
        outcome.steps.append(Step("created", described))
    return outcome
