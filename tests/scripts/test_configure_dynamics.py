"""``python -m scripts.configure_dynamics`` against the sandbox: Graph stand-in, Entra ID and Retail
Server over real HTTPS, the operator's ``az`` and ``azd`` as programs on PATH."""

from __future__ import annotations

import io

import pytest

from scripts.configure_dynamics import cli
from scripts.configure_dynamics.check import TokenRefusedError, token_with_patience
from scripts.configure_dynamics.deployment import Deployment, parse_dotenv
from scripts.configure_dynamics.instructions import identity_provider
from shared.managed_identity import token_exchange_audience
from tests.scripts.conftest import Operator

TOKEN_EXCHANGE = "api://AzureADTokenExchange"


async def run(operator: Operator, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await cli.run(operator.argv(*args), out=out)
    return code, out.getvalue()


async def configured(operator: Operator) -> str:
    code, _ = await run(operator, "configure")
    assert code == 0
    return operator.azd_values["ENTRA_CLIENT_ID"]


# ----- configure


async def test_configure_creates_the_app_its_principal_and_the_identitys_federated_credential(
    operator: Operator,
) -> None:
    code, output = await run(operator, "configure")

    assert code == 0, output
    (application,) = operator.graph.applications.values()
    assert application.display_name == "D365 Commerce Connector (commerce-test)"
    assert [sp.app_id for sp in operator.graph.service_principals.values()] == [application.app_id]
    (credential,) = application.federated
    sandbox = operator.sandbox
    assert credential.issuer == f"{sandbox.authority_host}/{sandbox.tenant_id}/v2.0"
    assert credential.subject == operator.identity_principal_id
    assert credential.audiences == [TOKEN_EXCHANGE]
    assert credential.name == "commerce-connector-commerce-test"
    # No secret anywhere: the app registration has none.
    assert application.passwords == []
    # ENTRA_CLIENT_ID reaches the azd environment and, through `azd provision`, the function app.
    assert operator.azd_values["ENTRA_CLIENT_ID"] == application.app_id
    assert ["env", "set", "ENTRA_CLIENT_ID", application.app_id] in operator.calls("azd")
    assert ["provision", "--no-prompt"] in operator.calls("azd")
    # Signed in as the operator through the Azure CLI, for Graph's resource, in the tenant.
    (az_call, *_) = operator.calls("az")
    assert az_call[:4] == ["account", "get-access-token", "--output", "json"]
    assert az_call[az_call.index("--resource") + 1] == operator.graph.resource
    assert az_call[az_call.index("--tenant") + 1] == sandbox.tenant_id


async def test_configure_prints_the_exact_headquarters_and_fno_values(operator: Operator) -> None:
    code, output = await run(operator, "configure")

    assert code == 0
    client_id = operator.azd_values["ENTRA_CLIENT_ID"]
    for line in (
        f"Identity provider      the Microsoft Entra provider of tenant {operator.sandbox.tenant_id}",
        f"Client ID            {client_id}",
        "Type                 Confidential",
        "User type            Application",
        "Server resource ID   https://commerce.dynamics.com",
        "job 1110",
        "Microsoft Entra applications",
        "Then: python -m scripts.configure_dynamics check",
    ):
        assert line in output, line


async def test_configure_twice_changes_nothing_the_second_time(operator: Operator) -> None:
    await configured(operator)
    writes = list(operator.graph.writes)
    azd_calls = len(operator.calls("azd"))

    code, output = await run(operator, "configure")

    assert code == 0
    assert operator.graph.writes == writes
    assert output.count("reused") == 3
    # Only the read of the environment: ENTRA_CLIENT_ID is already right, nothing to provision.
    assert operator.calls("azd")[azd_calls:] == [["env", "get-values"]]


async def test_dry_run_reads_but_writes_nothing(operator: Operator) -> None:
    code, output = await run(operator, "configure", "--dry-run")

    assert code == 0
    assert operator.graph.writes == []
    assert operator.graph.applications == {}
    assert output.count("would create") == 3
    assert "Dry run: nothing was changed." in output
    assert "ENTRA_CLIENT_ID" not in operator.azd_values
    assert not any(call[:2] == ["env", "set"] for call in operator.calls("azd"))


async def test_a_new_identity_after_azd_down_and_up_updates_the_credential_in_place(
    operator: Operator,
) -> None:
    await configured(operator)
    operator.set_azd(AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID="0a0b0c0d-1111-4222-8333-444455556666")

    code, output = await run(operator, "configure")

    assert code == 0
    (application,) = operator.graph.applications.values()
    (credential,) = application.federated
    assert credential.subject == "0a0b0c0d-1111-4222-8333-444455556666"
    assert f"it had subject {operator.identity_principal_id}" in output


async def test_an_existing_registration_named_by_entra_client_id_is_reused(operator: Operator) -> None:
    existing = operator.graph.add_application("Contoso Commerce integration")
    operator.set_azd(ENTRA_CLIENT_ID=existing.app_id)

    code, output = await run(operator, "configure")

    assert code == 0, output
    assert list(operator.graph.applications.values()) == [existing]
    assert len(existing.federated) == 1
    assert "Name                 Contoso Commerce integration" in output
    # The stored id was right already: no provisioning needed.
    assert ["provision", "--no-prompt"] not in operator.calls("azd")


async def test_an_entra_client_id_the_tenant_does_not_know_is_refused(operator: Operator) -> None:
    operator.set_azd(ENTRA_CLIENT_ID="99999999-9999-4999-8999-999999999999")

    code, output = await run(operator, "configure")

    assert code == 1
    assert "names no app registration" in output
    assert operator.graph.writes == []


async def test_an_operator_without_an_entra_role_is_told_which_one(operator: Operator) -> None:
    operator.graph.writable = False

    code, output = await run(operator, "configure")

    assert code == 1
    assert "Authorization_RequestDenied" in output
    assert "Application Developer" in output


async def test_signed_out_of_the_azure_cli_says_az_login(operator: Operator) -> None:
    operator.signed_out()

    code, output = await run(operator, "configure")

    assert code == 2
    assert "az login" in output


async def test_before_azd_up_the_missing_identity_is_named(operator: Operator) -> None:
    operator.set_azd(AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID="")

    code, output = await run(operator, "configure")

    assert code == 2
    assert "AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID" in output


async def test_without_azd_an_env_file_works_and_the_client_id_is_printed_to_set(operator: Operator) -> None:
    env_file = operator.bin / "values.env"
    env_file.write_text("".join(f'{key}="{value}"\n' for key, value in operator.azd_values.items()))
    operator.remove_azd()

    code, output = await run(operator, "configure", "--env-file", str(env_file))

    assert code == 0, output
    (application,) = operator.graph.applications.values()
    assert f"azd env set ENTRA_CLIENT_ID {application.app_id} && azd provision" in output


# ----- check


async def test_check_passes_once_the_values_are_in_headquarters(operator: Operator) -> None:
    client_id = await configured(operator)
    # The operator enters the printed client id as a relying party and job 1110 runs.
    operator.sandbox.relying_parties.add(client_id)

    code, output = await run(operator, "check")

    assert code == 0, output
    assert "ok   OUN 128: channel" in output and "ok   OUN 067: channel" in output
    assert f"aud https://commerce.dynamics.com, appid {client_id}" in output
    assert "ok   federated credential" in output
    # The temporary secret is gone again; the token was requested with it before that.
    (application,) = operator.graph.applications.values()
    assert application.passwords == []
    assert [write.rsplit("/", 1)[-1] for write in operator.graph.writes[-2:]] == [
        "addPassword",
        "removePassword",
    ]
    assert operator.sandbox.stats.token_requests[client_id] == 1


async def test_check_names_job_1110_when_retail_server_does_not_know_the_app(operator: Operator) -> None:
    await configured(operator)

    code, output = await run(operator, "check")

    assert code == 1
    assert "FAIL OUN 128: 401" in output and "FAIL OUN 067: 401" in output
    # The causes once, not per channel.
    assert output.count("distribution job 1110") == 1
    assert "Confidential" in output and "Application" in output
    (application,) = operator.graph.applications.values()
    assert application.passwords == []


async def test_check_explains_a_wrong_audience(operator: Operator) -> None:
    client_id = await configured(operator)
    operator.sandbox.relying_parties.add(client_id)

    code, output = await run(operator, "check", "--audience", "api://not-the-server-resource-id")

    assert code == 1
    assert "aud api://not-the-server-resource-id" in output
    assert "Server resource IDs do not hold api://not-the-server-resource-id" in output
    assert "audience is not https://commerce.dynamics.com" in output  # Retail Server's own words


async def test_check_explains_an_unknown_operating_unit_number(operator: Operator) -> None:
    client_id = await configured(operator)
    operator.sandbox.relying_parties.add(client_id)

    code, output = await run(operator, "check", "--oun", "999")

    assert code == 1
    assert "FAIL OUN 999: 404: no channel has the operating unit number 999" in output


async def test_check_with_a_secret_from_the_environment_needs_neither_graph_nor_az(
    operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = operator.sandbox
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    operator.set_azd(ENTRA_CLIENT_ID=sandbox.client_id)

    code, output = await run(operator, "check", "--credential", "secret", "--skip-graph")

    assert code == 0, output
    assert operator.calls("az") == []
    assert sandbox.client_secret not in output


async def test_check_explains_a_refused_token(operator: Operator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", "not-the-secret")
    operator.set_azd(ENTRA_CLIENT_ID=operator.sandbox.client_id)

    code, output = await run(operator, "check", "--credential", "secret", "--skip-graph")

    assert code == 1
    assert "AADSTS7000215" in output
    assert "refused the client secret" in output
    assert "not-the-secret" not in output


async def test_check_before_configure_names_entra_client_id(operator: Operator) -> None:
    code, output = await run(operator, "check")

    assert code == 2
    assert "ENTRA_CLIENT_ID" in output


# ----- pieces


def test_in_the_public_cloud_the_identity_provider_is_the_tenants_v1_issuer() -> None:
    deployment = Deployment.from_values({"AZURE_TENANT_ID": "5f3a8c1e-2b7d-4e9a-8c61-0d4b7e2f9a13"}, {})
    assert identity_provider(deployment) == "https://sts.windows.net/5f3a8c1e-2b7d-4e9a-8c61-0d4b7e2f9a13/"
    assert deployment.federated_issuer == (
        "https://login.microsoftonline.com/5f3a8c1e-2b7d-4e9a-8c61-0d4b7e2f9a13/v2.0"
    )
    assert deployment.token_exchange_audience == "api://AzureADTokenExchange"
    us = Deployment.from_values({"ENTRA_AUTHORITY_HOST": "https://login.microsoftonline.us/"}, {})
    assert us.token_exchange_audience == "api://AzureADTokenExchangeUSGov"


@pytest.mark.parametrize(
    "authority_host",
    [
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.us/",
        "https://login.chinacloudapi.cn",
        "https://login.partner.microsoftonline.cn",
        "https://127.0.0.1:8443",
    ],
)
def test_the_credential_is_created_for_the_audience_the_app_presents(authority_host: str) -> None:
    # The federated credential's audience must be exactly what the running app asks for.
    deployment = Deployment.from_values({"ENTRA_AUTHORITY_HOST": authority_host}, {})
    assert deployment.token_exchange_audience == token_exchange_audience(authority_host)


def test_dotenv_lines_as_azd_writes_them() -> None:
    text = 'AZURE_ENV_NAME="prod"\nIMAGE_VIEWPORTS="[{\\"media\\":\\"x\\"}]"\n# note\nEMPTY=""\nPLAIN=a=b\n'
    assert parse_dotenv(text) == {
        "AZURE_ENV_NAME": "prod",
        "IMAGE_VIEWPORTS": '[{"media":"x"}]',
        "EMPTY": "",
        "PLAIN": "a=b",
    }


async def test_a_new_secret_is_retried_while_entra_id_spreads_it_and_no_longer() -> None:
    answers: list[Exception | str] = [
        TokenRefusedError("not yet", 7000215),
        TokenRefusedError("not yet", 7000215),
        "token",
    ]
    waits: list[float] = []
    now = [0.0]

    async def fetch() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    assert await token_with_patience(fetch, patience_seconds=60, clock=lambda: now[0], sleep=sleep) == "token"
    assert waits == [2.0, 4.0]

    answers[:] = [TokenRefusedError("wrong audience", 500011)]
    with pytest.raises(TokenRefusedError):
        await token_with_patience(fetch, patience_seconds=60, clock=lambda: now[0], sleep=sleep)
    assert waits == [2.0, 4.0]


async def test_a_temporary_secret_that_cannot_be_removed_is_named_for_the_operator(
    operator: Operator,
) -> None:
    client_id = await configured(operator)
    operator.sandbox.relying_parties.add(client_id)
    object_id = next(iter(operator.graph.applications))
    operator.sandbox.faults.add(f"POST /graph/v1.0/applications/{object_id}/removePassword", status=503)

    code, output = await run(operator, "check")

    assert code == 1
    (application,) = operator.graph.applications.values()
    (password,) = application.passwords
    assert f"temporary secret (key id {password.key_id}) could not be removed" in output
    assert password.secret_text not in output


async def test_graph_out_of_reach_is_an_error_not_a_traceback(operator: Operator) -> None:
    out = io.StringIO()
    code = await cli.run(["configure", "--graph-url", "https://127.0.0.1:9/graph"], out=out)

    assert code == 1
    assert "could not be reached" in out.getvalue()
