"""The Dynamics side of a deployment in one command: ``python -m scripts.configure_dynamics``.

``configure`` (the default) creates or reuses the connector's Entra app registration, its service
principal and the federated identity credential that lets the function app's managed identity
sign in as it, stores the client id in the azd environment, and prints the values to enter in
Commerce headquarters and in Finance and Operations. ``check`` then asks Entra ID for a real token
for Retail Server and calls ``OrgUnits/GetOrgUnitConfiguration`` once per operating unit number,
explaining what a failure means. Facts and sources: docs/how-to/dynamics-setup.md.
"""
