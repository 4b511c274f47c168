// Everything the connector needs in one resource group, keyless: every service is reached with the
// function app's user-assigned identity, so no key or connection string exists to leak or rotate.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; it names the resource group and seeds the unique resource names.')
param environmentName string

@minLength(1)
@description('Region for every resource. Flex Consumption is not offered everywhere; these are its regions.')
@allowed([
  'australiaeast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'westcentralus'
  'westeurope'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person or pipeline running azd. When set, it may write the Key Vault secrets; it gets no other access.')
param principalId string = ''

@description('Kind of principal principalId is.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

// --- function app sizing -----------------------------------------------------------------------
@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound on scale-out; it also bounds the load the app can put on Retail Server.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

// --- Dynamics 365 Commerce and Entra ID (app settings) -----------------------------------------
@description('Microsoft Entra tenant of the app registration. Empty means the tenant of this subscription.')
param entraTenantId string = ''

@minLength(1)
@description('Application (client) id of the Entra app registration the connector signs in as.')
param entraClientId string

@minLength(1)
@description('Name of the Key Vault secret that holds the client secret of that app registration.')
param entraClientSecretName string = 'entra-client-secret'

@minLength(1)
@description('Retail Server (Commerce Scale Unit) base URL, https://<csu>.commerce.dynamics.com.')
param retailServerUrl string

@minLength(1)
@description('Token audience of Retail Server: the server resource id registered in Commerce.')
param retailServerAudience string = 'https://commerce.dynamics.com'

@minLength(1)
@description('Comma-separated operating unit numbers of the online channels to scan for abandoned carts.')
param operatingUnitNumbers string

@minLength(1)
@description('Six-field NCRONTAB schedule of the detection timer, in UTC.')
param detectSchedule string = '0 */15 * * * *'

@description('Log level of the connector\'s own loggers.')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// Names the code defaults to (shared/settings.py); tests/infra keeps the two in step.
var detectionQueueName = 'abandoned-carts'
var cosmosDatabaseName = 'commerce-connector'
var cosmosLedgerContainerName = 'ledger'
var cosmosStateContainerName = 'state'

var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'core/security/user-assigned-identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    // The host moves a message to <queue>-poison after maxDequeueCount failures (host.json).
    queueNames: [
      detectionQueueName
      '${detectionQueueName}-poison'
    ]
  }
}

module cosmos 'core/database/cosmos-nosql.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    accountName: '${abbrs.documentDBDatabaseAccounts}${resourceToken}'
    location: location
    tags: tags
    databaseName: cosmosDatabaseName
    containerNames: [
      cosmosLedgerContainerName
      cosmosStateContainerName
    ]
  }
}

module keyVault 'core/security/key-vault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityName: identity.outputs.name
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    keyVaultUri: keyVault.outputs.uri
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabaseName: cosmosDatabaseName
    cosmosLedgerContainerName: cosmosLedgerContainerName
    cosmosStateContainerName: cosmosStateContainerName
    detectionQueueName: detectionQueueName
    entraTenantId: empty(entraTenantId) ? tenant().tenantId : entraTenantId
    entraClientId: entraClientId
    entraClientSecretName: entraClientSecretName
    retailServerUrl: retailServerUrl
    retailServerAudience: retailServerAudience
    operatingUnitNumbers: operatingUnitNumbers
    detectSchedule: detectSchedule
    logLevel: logLevel
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    cosmosAccountName: cosmos.outputs.accountName
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_ENDPOINT string = api.outputs.uri
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_COSMOS_ACCOUNT_NAME string = cosmos.outputs.accountName
output AZURE_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
