// Host storage for the function app (timer schedule monitor, singleton locks, deployment
// package) and the queues between detection and notification. Entra ID only: shared keys off.
param name string
param location string = resourceGroup().location
param tags object = {}

@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Queues the app triggers on or writes to, declared so none is created implicitly.')
param queueNames array

@description('Disabled when the account is reached through private endpoints only (main.bicep vnetEnabled).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('What the firewall does with public traffic no rule admits: Deny alongside private endpoints.')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Allow'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Public mode (vnetEnabled false): without VNet integration the Flex host reaches its storage over the public endpoint; shared keys are off, so only Entra principals with data roles get in.
  // checkov:skip=CKV_AZURE_59:Public mode (vnetEnabled false): same reason as CKV_AZURE_35; anonymous blob access is off (allowBlobPublicAccess false).
  // checkov:skip=CKV_AZURE_206:LRS keeps three copies in the region; the account holds host locks, a re-deployable package and short-lived queue messages, and ZRS/GRS is not offered in every Flex region. Raise the SKU where the region allows.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
    }
  }

}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
