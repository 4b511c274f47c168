// Holds the secrets the operator puts in after deployment (client secrets of the app
// registrations, email provider keys). Access is Azure RBAC only; nothing here holds a value.
param name string
param location string = resourceGroup().location
param tags object = {}

@description('Disabled when the vault is reached through a private endpoint only (main.bicep vnetEnabled).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('What the firewall does with public traffic no rule admits: Deny alongside a private endpoint.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Allow'

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:Public mode (vnetEnabled false): without VNet integration the Flex app has no fixed egress address to allow; access is Azure RBAC only, with read-only Secrets User for the app.
  // checkov:skip=CKV_AZURE_189:Public mode (vnetEnabled false): same reason as CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Cannot be turned off again; the vault name stays reserved until retention ends.
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
