// The one identity the function app uses for storage, Cosmos DB, Key Vault and telemetry.
// User-assigned so its roles exist before the app does and survive re-creating the app.
param name string
param location string = resourceGroup().location
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output name string = identity.name
output resourceId string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
