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

@description('Application (client) id of the Entra app registration the connector signs in as. Empty until `python -m scripts.configure_dynamics` creates the registration after the first `azd up` and sets it; until then every invocation fails naming ENTRA_CLIENT_ID.')
param entraClientId string = ''

@description('How the connector proves itself to Entra ID for Retail Server and F&O: federated (the function app\'s user-assigned identity is a federated identity credential of the app registration; no secret exists) or secret (a client secret in Key Vault).')
@allowed([
  'federated'
  'secret'
])
param entraCredential string = 'federated'

@minLength(1)
@description('Name of the Key Vault secret that holds the client secret of that app registration; read only when entraCredential is secret.')
param entraClientSecretName string = 'entra-client-secret'

@minLength(1)
@description('Entra ID authority host the tokens are requested from; https://login.microsoftonline.us (US Government) or https://login.chinacloudapi.cn (21Vianet) in a sovereign cloud.')
param entraAuthorityHost string = 'https://login.microsoftonline.com'

@minLength(1)
@description('Retail Server (Commerce Scale Unit) base URL, https://<csu>.commerce.dynamics.com.')
param retailServerUrl string

@minLength(1)
@description('Token audience of Retail Server: the server resource id registered in Commerce.')
param retailServerAudience string = 'https://commerce.dynamics.com'

@minLength(1)
@description('api-version query parameter sent on every Retail Server call.')
param retailServerApiVersion string = '7.3'

@minLength(1)
@description('Comma-separated operating unit numbers of the online channels to scan for abandoned carts.')
param operatingUnitNumbers string

@minLength(1)
@description('Six-field NCRONTAB schedule of the detection timer, in UTC.')
param detectSchedule string = '0 */15 * * * *'

@description('How far back, in minutes, detection looks for carts, even after downtime (1-43200).')
@minValue(1)
@maxValue(43200)
param lookbackMinutes int = 1440

@description('Minutes without a change after which a cart counts as abandoned; must be below lookbackMinutes.')
@minValue(1)
@maxValue(10080)
param abandonedAfterMinutes int = 60

@description('Most carts one detection run records and queues; the rest wait for the next run.')
@minValue(1)
@maxValue(100000)
param maxCartsPerRun int = 2000

@description('$top of each Carts/Search page detection reads; at most 200, so a page of real carts stays under maxResponseBytes.')
@minValue(1)
@maxValue(200)
param cartPageSize int = 100

@description('Log level of the connector\'s own loggers.')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

@description('Percentage of traces (spans) the app exports to Application Insights; log records and metrics are never sampled.')
@minValue(1)
@maxValue(100)
param telemetrySamplingPercentage int = 100

// --- upstream calls and secrets (tuning) -------------------------------------------------------
@description('How long a Key Vault secret is cached, in seconds; a rotated secret is picked up within this time. 0 reads it on every use.')
@minValue(0)
@maxValue(86400)
param secretCacheTtlSeconds int = 300

@minLength(1)
@description('Total timeout of one upstream HTTP attempt, in seconds (a decimal number): more than 0, at most 230.')
param httpTimeoutSeconds string = '30'

@minLength(1)
@description('Connect timeout of one upstream HTTP attempt, in seconds (a decimal number): more than 0, at most 60.')
param httpConnectTimeoutSeconds string = '10'

@description('Attempts per upstream call; 429, 5xx, timeouts and connection errors are retried with exponential backoff.')
@minValue(1)
@maxValue(10)
param httpMaxAttempts int = 4

@minLength(1)
@description('First backoff ceiling between attempts, in seconds (a decimal number), doubling per attempt: at least 0, at most 30.')
param httpBackoffBaseSeconds string = '0.5'

@minLength(1)
@description('Largest backoff ceiling between attempts, in seconds (a decimal number): at least 0, at most 300.')
param httpBackoffMaxSeconds string = '30'

@description('Largest upstream response body read, in bytes (8 MiB by default); a larger answer fails its call with an error naming MAX_RESPONSE_BYTES. Parsed JSON takes many times its size in memory.')
@minValue(65536)
@maxValue(67108864)
param maxResponseBytes int = 8388608

@minLength(1)
@description('Read timeout of one Key Vault attempt, in seconds (a decimal number): more than 0, at most 60.')
param keyVaultTimeoutSeconds string = '5'

@description('Attempts per Key Vault read; timeouts, connection errors, 429 and 5xx are retried.')
@minValue(1)
@maxValue(10)
param keyVaultMaxAttempts int = 3

@minLength(1)
@description('Read timeout of one Cosmos DB request, in seconds (a decimal number): more than 0, at most 120.')
param cosmosTimeoutSeconds string = '10'

@description('Attempts per Cosmos DB operation; an operation gives up after COSMOS_TIMEOUT_SECONDS times this.')
@minValue(1)
@maxValue(10)
param cosmosMaxAttempts int = 3

// --- notification ------------------------------------------------------------------------------
@description('Who may get an abandoned-cart email: opted_in (explicit opt-in), not_opted_out, or off (transactional use only; the suppression list still applies).')
@allowed([
  'opted_in'
  'not_opted_out'
  'off'
])
param consentPolicy string = 'not_opted_out'

@description('At most one abandoned-cart sequence per customer in this many hours; 0 turns the cap off.')
@minValue(0)
@maxValue(720)
param frequencyCapHours int = 24

@description('Skip a cart whose customer placed an order since the cart last changed.')
param orderCheck bool = true

@description('Share of customers (0-50 percent) held out of the abandoned-cart emails to measure their lift; 0 is off.')
@minValue(0)
@maxValue(50)
param holdoutPercent int = 0

@description('Days a customer stays in the same group (mailed or held out).')
@minValue(1)
@maxValue(365)
param holdoutPeriodDays int = 30

@minLength(1)
@description('Name of the Key Vault secret that keys the holdout assignment (at least 16 bytes).')
param holdoutSaltSecretName string = 'holdout-salt'

@description('Days after the first reminder in which an order counts for the cart.')
@minValue(1)
@maxValue(30)
param attributionDays int = 7

@minLength(1)
@description('Six-field NCRONTAB schedule of the conversion-tracking timer, in UTC.')
param trackSchedule string = '0 5 * * * *'

@description('Carts whose orders one conversion-tracking run looks up, at most.')
@minValue(1)
@maxValue(50000)
param maxTrackedCartsPerRun int = 1000

@minLength(1)
@description('Comma-separated, strictly increasing minutes after the cart\'s last change at which each reminder is due, e.g. 60,1440 (at most 20 steps, the last at most 43200).')
param reminderSteps string = '60'

@description('Storefront base URL, https://shop.example.com; product links are <siteUrl>/<name-slug>/<RecordId>.p. Empty: no product links.')
param siteUrl string = ''

@description('Return-to-cart link with the placeholders {cartId} (required), {oun} and {channelId}, e.g. https://shop.example.com/cart?cartId={cartId}. Empty: no cart link.')
param returnToCartUrlTemplate string = ''

@description('Unsubscribe link with the placeholders {customerId}, {cartId}, {oun} and {channelId}. Empty: no unsubscribe link in the email.')
param unsubscribeUrlTemplate string = ''

@description('Media Server base URL of the channel profile; relative product image paths are appended to it. Empty: only absolute image URLs are used.')
param imageBaseUrl string = ''

@description('JSON list of {"media", "width", "height", "default"}: one resized product image per CSS media query, exactly one the default <img>. Empty: the code\'s three viewports (80, 183 and 315 px), written out as the app setting.')
param imageViewports string = ''

@description('How long concurrent invocations collect customer and product ids into one batched look-up, in milliseconds; 0 looks each up at once.')
@minValue(0)
@maxValue(1000)
param coalesceWindowMs int = 25

@description('Cache lifetime of products and their media locations, in seconds.')
@minValue(0)
@maxValue(86400)
param productCacheTtlSeconds int = 600

@description('Cache lifetime of the channel configuration (currency, default language), in seconds.')
@minValue(0)
@maxValue(86400)
param channelCacheTtlSeconds int = 3600

// --- email provider ----------------------------------------------------------------------------
@description('Which provider sends the emails. preview sends nothing and writes each message to /tmp/previews on the instance.')
@allowed([
  'emarsys'
  'sendgrid'
  'webhook'
  'preview'
])
param emailProvider string = 'preview'

@description('true sends nothing whatever emailProvider says (each message is previewed instead). On by default so a first deployment mails no customer; set it to false once the provider is configured.')
param dryRun bool = true

@description('Emarsys authentication: oauth (OAuth 2.0 client credentials, API v3) or wsse (API v2, until its sunset at the end of 2026).')
@allowed([
  'oauth'
  'wsse'
])
param emarsysAuth string = 'oauth'

@minLength(1)
@description('Emarsys API base URL (https).')
param emarsysApiUrl string = 'https://api.emarsys.net'

@minLength(1)
@description('Emarsys OAuth base URL (https); the token endpoint is <emarsysAuthUrl>/oauth2/token.')
param emarsysAuthUrl string = 'https://auth.emarsys.net'

@minLength(1)
@description('Name of the Key Vault secret that holds the Emarsys OAuth client id.')
param emarsysClientIdSecretName string = 'emarsys-client-id'

@minLength(1)
@description('Name of the Key Vault secret that holds the Emarsys OAuth client secret.')
param emarsysClientSecretName string = 'emarsys-client-secret'

@minLength(1)
@description('Name of the Key Vault secret that holds the Emarsys WSSE API user name (emarsysAuth wsse only).')
param emarsysWsseUserSecretName string = 'emarsys-wsse-user'

@minLength(1)
@description('Name of the Key Vault secret that holds the Emarsys WSSE API secret (emarsysAuth wsse only).')
param emarsysWsseSecretName string = 'emarsys-wsse-secret'

@description('Numeric id of the Emarsys external event that triggers the abandoned-cart program; required when emailProvider is emarsys and dryRun is false. Empty: not set.')
param emarsysEventId string = ''

@minLength(1)
@description('Emarsys contact field that identifies the recipient: 3 is E-Mail (the address is sent); any other id is an indexed custom field holding the customer account number.')
param emarsysKeyId string = '3'

@description('On Emarsys reply 2008 (unknown contact): true creates the contact and triggers once more; false skips the step.')
param emarsysCreateMissingContacts bool = false

@description('SendGrid dynamic template id (d-...); required when emailProvider is sendgrid.')
param sendgridTemplateId string = ''

@description('Sender address of SendGrid emails (a verified sender); required when emailProvider is sendgrid.')
param sendgridFromEmail string = ''

@description('Sender display name of SendGrid emails. Empty: the address only.')
param sendgridFromName string = ''

@minLength(1)
@description('SendGrid API base URL (https); https://api.eu.sendgrid.com for EU regional subusers.')
param sendgridApiUrl string = 'https://api.sendgrid.com'

@minLength(1)
@description('Name of the Key Vault secret that holds the SendGrid API key (Mail Send permission).')
param sendgridApiKeySecretName string = 'sendgrid-api-key'

@description('Numeric id of the SendGrid unsubscribe group (asm.group_id) of the emails. Empty: not set.')
param sendgridUnsubscribeGroupId string = ''

@description('https endpoint that receives each message, signed with the webhook-signing-secret; required when emailProvider is webhook.')
param webhookUrl string = ''

@minLength(1)
@description('Name of the Key Vault secret each webhook request is signed with.')
param webhookSigningSecretName string = 'webhook-signing-secret'

// --- customers (POST /api/customers) -------------------------------------------------------------
@description('Finance and Operations environment URL, https://<env>.operations.dynamics.com; the token audience is derived from it. Empty: POST /api/customers answers 503.')
param fnoUrl string = ''

@minLength(1)
@description('Path of the F&O custom service operation that creates a customer, /api/services/<group>/<service>/<operation>.')
param fnoCreateCustomerPath string = '/api/services/CreateCustomerServiceGroup/CreateCustomerService/CreateCustomer'

@minLength(1)
@maxLength(64)
@description('F&O OData entity the duplicate check reads.')
param fnoCustomersEntity string = 'CustomersV3'

@description('Client id of a separate Entra app for F&O (its secret is fno-client-secret in Key Vault). Empty: the connector\'s own app (entraClientId) is used.')
param fnoClientId string = ''

@minLength(1)
@description('Name of the Key Vault secret that holds the client secret of fnoClientId.')
param fnoClientSecretName string = 'fno-client-secret'

@minLength(1)
@description('Timeout of one F&O call, in seconds (a decimal number; the till is waiting): more than 0, at most 230.')
param fnoTimeoutSeconds string = '25'

@description('Attempts of one F&O call on 429, 503 and connection failures before anything was sent.')
@minValue(1)
@maxValue(5)
param fnoMaxAttempts int = 2

@minLength(1)
@description('Longest Retry-After of F&O waited for before answering 503, in seconds (a decimal number): at least 0, at most 60.')
param fnoMaxRetryWaitSeconds string = '5'

@description('Turn on App Service authentication (Easy Auth) for the HTTP endpoints with the apiClientId app registration (deployed only when apiClientId is set), and require the customersAppRole app role on the customers endpoints. The erasure endpoint requires privacyAppRole whatever this says. The app trusts the claims header only while the platform reports authentication on (WEBSITE_AUTH_ENABLED), so a forged header never counts.')
param easyAuthEnabled bool = false

@minLength(1)
@maxLength(120)
@description('App role a caller of the customers endpoint must hold when easyAuthEnabled is true.')
param customersAppRole string = 'Customers.Create'

@description('Look the email of a new customer up in F&O (CustomersV3) before creating it; a match answers 409.')
param duplicateCheckEnabled bool = false

@description('How long the outcome of an Idempotency-Key is kept, in hours.')
@minValue(1)
@maxValue(720)
param idempotencyTtlHours int = 24

@description('Cloud POS base URL (without /POS) for the cloudPos deep link returned with a new customer. Empty: the Store Commerce link only.')
param cposUrl string = ''

@description('Largest request body of the customers endpoint, in bytes; a larger one gets 413.')
@minValue(1024)
@maxValue(1048576)
param customerMaxBodyBytes int = 32768

// --- privacy (GET|POST /api/unsubscribe, POST /api/privacy/erasure) ---------------------------------
@minLength(1)
@description('Name of the Key Vault secret that signs the {unsubscribeToken} of the unsubscribe link.')
param unsubscribeSigningSecretName string = 'unsubscribe-signing-secret'

@description('How long an unsubscribe link stays valid, in days.')
@minValue(1)
@maxValue(3650)
param unsubscribeLinkDays int = 365

@minLength(1)
@maxLength(120)
@description('App role every caller of the erasure endpoint must hold (in an Entra token for apiClientId), whatever easyAuthEnabled says.')
param privacyAppRole string = 'Privacy.Erase'

// --- callers of the HTTP endpoints (shared/caller_auth.py) -----------------------------------------
@maxLength(120)
@description('Application (client) id of the app registration that stands for this connector\'s HTTP API and defines the app roles. Callers send Entra tokens issued for it; with easyAuthEnabled, App Service authentication is configured with it. Empty: no bearer token is accepted, and only App Service authentication set up outside this deployment can vouch for a caller.')
param apiClientId string = ''

@maxLength(400)
@description('Audience (Application ID URI) of those tokens. Empty: api://<apiClientId>.')
param apiAudience string = ''

// --- monitoring: the workbook and the alerts (infra/monitoring) -----------------------------------
@maxLength(254)
@description('Email address the alerts are sent to. Empty: the alert rules still run and fired alerts show in Azure Monitor > Alerts, but no action group is created and nobody is notified.')
param alertEmailAddress string = ''

@description('Minutes between two detection runs, for the "no detection run completed for three periods" alert. 0 derives it from detectSchedule (every N minutes, hourly, every N hours, daily, or a list of minutes); set it for any other schedule.')
@minValue(0)
@maxValue(1440)
param alertDetectionPeriodMinutes int = 0

@description('Hours in a row, inside business hours, after which a channel that found no abandoned cart is reported; 0 turns that alert off.')
@minValue(0)
@maxValue(23)
param alertNoCartsHours int = 4

@description('First hour of business hours, UTC (0-23), for the no-carts alert.')
@minValue(0)
@maxValue(23)
param alertBusinessHoursStartUtc int = 8

@description('Hour business hours end, UTC (1-24), for the no-carts alert.')
@minValue(1)
@maxValue(24)
param alertBusinessHoursEndUtc int = 20

@minLength(1)
@description('Business days for the no-carts alert: comma-separated day numbers, 0 Sunday to 6 Saturday.')
param alertBusinessDays string = '0,1,2,3,4,5,6'

@description('Failed invocations of detection or notification in 15 minutes above which the alert fires.')
@minValue(0)
@maxValue(10000)
param alertFailedInvocationsThreshold int = 0

@description('Percentage of POST /api/customers calls answered with a 5xx in 15 minutes above which the alert fires.')
@minValue(0)
@maxValue(100)
param alertCustomerServerErrorPercent int = 5

@description('Calls of POST /api/customers in 15 minutes below which the 5xx alert stays quiet (one failure at night is not a rate).')
@minValue(1)
@maxValue(10000)
param alertCustomerMinimumCalls int = 5

// --- private networking (optional; docs/how-to/private-networking.md) -----------------------------
@description('true: a virtual network with private endpoints and private DNS zones for Storage (blob, queue), Cosmos DB and Key Vault, whose public network access is then off; the function app reaches them through VNet integration. Its HTTP endpoints stay public (POS tills and email links call them).')
param vnetEnabled bool = false

@description('With vnetEnabled, how the app reaches Retail Server, F&O and the email provider: natGateway (a NAT gateway with one static public IP, output as AZURE_OUTBOUND_IP_ADDRESS, for allow-lists) or default (the platform\'s shared outbound addresses, which can change).')
@allowed([
  'natGateway'
  'default'
])
param vnetOutbound string = 'natGateway'

@description('Address space of the virtual network (vnetEnabled); pick one that does not overlap a network you will peer it with.')
param vnetAddressPrefix string = '10.60.0.0/16'

@description('Subnet the function app integrates with, delegated to Microsoft.App/environments; Flex Consumption takes an address per instance, so keep it larger than maximumInstanceCount.')
param vnetAppSubnetPrefix string = '10.60.0.0/24'

@description('Subnet of the private endpoints.')
param vnetPrivateEndpointSubnetPrefix string = '10.60.1.0/24'

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

// With vnetEnabled the data services answer on their private endpoints only.
var publicNetworkAccess = vnetEnabled ? 'Disabled' : 'Enabled'
var networkDefaultAction = vnetEnabled ? 'Deny' : 'Allow'

module storage 'core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    publicNetworkAccess: publicNetworkAccess
    networkDefaultAction: networkDefaultAction
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
    publicNetworkAccess: publicNetworkAccess
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
    publicNetworkAccess: publicNetworkAccess
    networkDefaultAction: networkDefaultAction
  }
}

module network 'core/network/vnet.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: vnetAppSubnetPrefix
    privateEndpointSubnetPrefix: vnetPrivateEndpointSubnetPrefix
    outbound: vnetOutbound
    natGatewayName: '${abbrs.networkNatGateways}${resourceToken}'
    publicIpName: '${abbrs.networkPublicIPAddresses}${resourceToken}'
  }
}

// One private endpoint per sub-resource the app uses; the zone names are Azure's for each
// (learn.microsoft.com/azure/private-link/private-endpoint-dns).
module blobEndpoint 'core/network/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pep-blob'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}blob-${resourceToken}'
    location: location
    tags: tags
    serviceId: storage.outputs.id
    groupId: 'blob'
    dnsZoneName: 'privatelink.blob.core.windows.net'
    vnetId: vnetEnabled ? network.outputs.id : ''
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
  }
}

module queueEndpoint 'core/network/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pep-queue'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}queue-${resourceToken}'
    location: location
    tags: tags
    serviceId: storage.outputs.id
    groupId: 'queue'
    dnsZoneName: 'privatelink.queue.core.windows.net'
    vnetId: vnetEnabled ? network.outputs.id : ''
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
  }
}

module cosmosEndpoint 'core/network/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pep-cosmos'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}cosmos-${resourceToken}'
    location: location
    tags: tags
    serviceId: cosmos.outputs.id
    groupId: 'Sql'
    dnsZoneName: 'privatelink.documents.azure.com'
    vnetId: vnetEnabled ? network.outputs.id : ''
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
  }
}

module vaultEndpoint 'core/network/private-endpoint.bicep' = if (vnetEnabled) {
  name: 'pep-vault'
  scope: rg
  params: {
    name: '${abbrs.networkPrivateEndpoints}vault-${resourceToken}'
    location: location
    tags: tags
    serviceId: keyVault.outputs.id
    groupId: 'vault'
    dnsZoneName: 'privatelink.vaultcore.azure.net'
    vnetId: vnetEnabled ? network.outputs.id : ''
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
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
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    keyVaultUri: keyVault.outputs.uri
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabaseName: cosmosDatabaseName
    cosmosLedgerContainerName: cosmosLedgerContainerName
    cosmosStateContainerName: cosmosStateContainerName
    detectionQueueName: detectionQueueName
    entraTenantId: empty(entraTenantId) ? tenant().tenantId : entraTenantId
    entraClientId: entraClientId
    entraCredential: entraCredential
    entraClientSecretName: entraClientSecretName
    entraAuthorityHost: entraAuthorityHost
    secretCacheTtlSeconds: secretCacheTtlSeconds
    httpTimeoutSeconds: httpTimeoutSeconds
    httpConnectTimeoutSeconds: httpConnectTimeoutSeconds
    httpMaxAttempts: httpMaxAttempts
    httpBackoffBaseSeconds: httpBackoffBaseSeconds
    httpBackoffMaxSeconds: httpBackoffMaxSeconds
    maxResponseBytes: maxResponseBytes
    keyVaultTimeoutSeconds: keyVaultTimeoutSeconds
    keyVaultMaxAttempts: keyVaultMaxAttempts
    cosmosTimeoutSeconds: cosmosTimeoutSeconds
    cosmosMaxAttempts: cosmosMaxAttempts
    retailServerUrl: retailServerUrl
    retailServerAudience: retailServerAudience
    retailServerApiVersion: retailServerApiVersion
    operatingUnitNumbers: operatingUnitNumbers
    detectSchedule: detectSchedule
    lookbackMinutes: lookbackMinutes
    abandonedAfterMinutes: abandonedAfterMinutes
    maxCartsPerRun: maxCartsPerRun
    cartPageSize: cartPageSize
    logLevel: logLevel
    telemetrySamplingPercentage: telemetrySamplingPercentage
    consentPolicy: consentPolicy
    frequencyCapHours: frequencyCapHours
    orderCheck: orderCheck
    holdoutPercent: holdoutPercent
    holdoutPeriodDays: holdoutPeriodDays
    holdoutSaltSecretName: holdoutSaltSecretName
    attributionDays: attributionDays
    trackSchedule: trackSchedule
    maxTrackedCartsPerRun: maxTrackedCartsPerRun
    reminderSteps: reminderSteps
    siteUrl: siteUrl
    returnToCartUrlTemplate: returnToCartUrlTemplate
    unsubscribeUrlTemplate: unsubscribeUrlTemplate
    imageBaseUrl: imageBaseUrl
    imageViewports: imageViewports
    coalesceWindowMs: coalesceWindowMs
    productCacheTtlSeconds: productCacheTtlSeconds
    channelCacheTtlSeconds: channelCacheTtlSeconds
    emailProvider: emailProvider
    dryRun: dryRun
    emarsysAuth: emarsysAuth
    emarsysApiUrl: emarsysApiUrl
    emarsysAuthUrl: emarsysAuthUrl
    emarsysClientIdSecretName: emarsysClientIdSecretName
    emarsysClientSecretName: emarsysClientSecretName
    emarsysWsseUserSecretName: emarsysWsseUserSecretName
    emarsysWsseSecretName: emarsysWsseSecretName
    emarsysEventId: emarsysEventId
    emarsysKeyId: emarsysKeyId
    emarsysCreateMissingContacts: emarsysCreateMissingContacts
    sendgridTemplateId: sendgridTemplateId
    sendgridFromEmail: sendgridFromEmail
    sendgridFromName: sendgridFromName
    sendgridApiUrl: sendgridApiUrl
    sendgridApiKeySecretName: sendgridApiKeySecretName
    sendgridUnsubscribeGroupId: sendgridUnsubscribeGroupId
    webhookUrl: webhookUrl
    webhookSigningSecretName: webhookSigningSecretName
    fnoUrl: fnoUrl
    fnoCreateCustomerPath: fnoCreateCustomerPath
    fnoCustomersEntity: fnoCustomersEntity
    fnoClientId: fnoClientId
    fnoClientSecretName: fnoClientSecretName
    fnoTimeoutSeconds: fnoTimeoutSeconds
    fnoMaxAttempts: fnoMaxAttempts
    fnoMaxRetryWaitSeconds: fnoMaxRetryWaitSeconds
    easyAuthEnabled: easyAuthEnabled
    customersAppRole: customersAppRole
    duplicateCheckEnabled: duplicateCheckEnabled
    idempotencyTtlHours: idempotencyTtlHours
    cposUrl: cposUrl
    customerMaxBodyBytes: customerMaxBodyBytes
    unsubscribeSigningSecretName: unsubscribeSigningSecretName
    unsubscribeLinkDays: unsubscribeLinkDays
    privacyAppRole: privacyAppRole
    apiClientId: apiClientId
    apiAudience: apiAudience
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

// The operator's view and the alerts; neither needs an identity or a role (infra/monitoring).
module workbook 'monitoring/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    displayName: 'D365 Commerce Connector (${environmentName})'
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    storageAccountName: storage.outputs.name
  }
}

module alerts 'monitoring/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: resourceToken
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    alertEmailAddress: alertEmailAddress
    detectSchedule: detectSchedule
    detectionPeriodMinutes: alertDetectionPeriodMinutes
    operatingUnitNumbers: operatingUnitNumbers
    noCartsHours: alertNoCartsHours
    businessHoursStartUtc: alertBusinessHoursStartUtc
    businessHoursEndUtc: alertBusinessHoursEndUtc
    businessDays: alertBusinessDays
    failedInvocationsThreshold: alertFailedInvocationsThreshold
    customerServerErrorPercent: alertCustomerServerErrorPercent
    customerMinimumCalls: alertCustomerMinimumCalls
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
// The subject of the app registration's federated identity credential (entraCredential federated;
// scripts/configure_dynamics creates it).
output AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
// The address Retail Server, F&O and the email provider see with vnetEnabled and natGateway; empty otherwise.
output AZURE_OUTBOUND_IP_ADDRESS string = vnetEnabled ? network.outputs.outboundIpAddress : ''
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_COSMOS_ACCOUNT_NAME string = cosmos.outputs.accountName
output AZURE_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_MONITOR_WORKBOOK_ID string = workbook.outputs.id
