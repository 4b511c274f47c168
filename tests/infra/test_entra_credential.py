"""ENTRA_CREDENTIAL in Azure: the Bicep deploys without any client secret by default (the app's
user-assigned identity is the app registration's federated credential), and a secret stays a
parameter away."""

from __future__ import annotations

from tests.infra.bicep import Opaque, app_settings, main
from tests.infra.test_deployed_settings import AT_DEPLOYMENT, OPERATOR_VALUES, deployed


def test_the_default_deployment_is_federated_with_the_apps_identity() -> None:
    settings = deployed()
    assert settings.entra_credential == "federated"
    assert settings.azure_client_id == AT_DEPLOYMENT["AZURE_CLIENT_ID"]
    provided = app_settings(OPERATOR_VALUES)
    # The identity the host and the SDK clients use is the one presented to Entra ID.
    assert isinstance(provided["AZURE_CLIENT_ID"], Opaque)
    assert "identity.properties.clientId" in provided["AZURE_CLIENT_ID"].expression


def test_a_client_secret_is_a_parameter_away() -> None:
    settings = deployed(entraCredential="secret", entraClientSecretName="entra-secret-2026")
    assert settings.entra_credential == "secret"
    assert settings.entra_client_secret_name == "entra-secret-2026"


def test_the_deployment_outputs_the_subject_of_the_federated_credential() -> None:
    outputs = main().json["outputs"]
    value = outputs["AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID"]["value"]
    # identity.outputs.principalId: the managed identity's object id, the credential's subject.
    assert "identity" in str(value) and "principalId" in str(value)
