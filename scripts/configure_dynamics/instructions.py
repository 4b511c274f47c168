"""The values to enter in Commerce headquarters and in Finance and Operations, exactly.

Where they go (docs/how-to/dynamics-setup.md has the sources): Commerce shared parameters > Identity
providers > the tenant's Microsoft Entra provider > Relying parties (the client id, Type
Confidential, User type Application) > Server resource IDs (the token audience), then distribution
job 1110; in F&O, System administration > Setup > Microsoft Entra applications (client id, name,
and the service user the calls run as).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from scripts.configure_dynamics.deployment import Deployment


def identity_provider(deployment: Deployment) -> str:
    """The issuer of the tenant's Entra provider as Commerce lists it (v1 app tokens)."""
    host = (urlsplit(deployment.authority_host).hostname or "").lower()
    if host == "login.microsoftonline.com":
        return f"https://sts.windows.net/{deployment.tenant}/"
    return f"the Microsoft Entra provider of tenant {deployment.tenant}"


def render(deployment: Deployment, *, client_id: str, display_name: str) -> str:
    fno_client = deployment.fno_client_id or client_id
    fno_url = deployment.fno_url or "not set (FNO_URL): only POS customer creation needs F&O"
    lines = [
        "",
        "Commerce headquarters",
        "  Retail and Commerce > Headquarters setup > Parameters > Commerce shared parameters",
        "    > Identity providers",
        f"  Identity provider      {identity_provider(deployment)}  (Type: Azure Active Directory)",
        "  Relying parties, New:",
        f"    Client ID            {client_id}",
        "    Type                 Confidential",
        "    User type            Application",
        f"    Name                 {display_name}",
        "  Server resource IDs of that relying party, New:",
        f"    Server resource ID   {deployment.retail_server_audience}",
        "  Save, then run distribution schedule job 1110 (Global configuration): until it has run,",
        "  Retail Server refuses the connector's tokens.",
        "",
        "Finance and Operations",
        "  System administration > Setup > Microsoft Entra applications, New:",
        f"    Client ID            {fno_client}",
        f"    Name                 {display_name}",
        "    User ID              a service user with rights to the CreateCustomer service",
        "                         (and read access to CustomersV3 for DUPLICATE_CHECK_ENABLED)",
        f"  Environment            {fno_url}",
        "",
        "Then: python -m scripts.configure_dynamics check",
    ]
    return "\n".join(lines)
