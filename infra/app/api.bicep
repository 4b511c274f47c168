// The function app on Flex Consumption (FC1, Linux, Python) with every app setting the code reads
// in Azure. The settings contract is shared/settings.py; tests/infra fails when the two drift.
param name string
param planName string
param location string = resourceGroup().location
param tags object = {}

param identityName string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Subnet (delegated to Microsoft.App/environments) the app integrates with; empty: no VNet integration.')
param virtualNetworkSubnetId string = ''

param keyVaultUri string
param cosmosEndpoint string
param cosmosDatabaseName string
param cosmosLedgerContainerName string
param cosmosStateContainerName string
param detectionQueueName string
param entraTenantId string
param entraClientId string
param entraCredential string
param entraClientSecretName string
param retailServerUrl string
param retailServerAudience string
param operatingUnitNumbers string
param detectSchedule string
param lookbackMinutes int
param abandonedAfterMinutes int
param maxCartsPerRun int
param logLevel string
param telemetrySamplingPercentage int

// Notify, email providers and customers: main.bicep documents each one.
param consentPolicy string
param frequencyCapHours int
param orderCheck bool
param holdoutPercent int
param holdoutPeriodDays int
param holdoutSaltSecretName string
param attributionDays int
param trackSchedule string
param maxTrackedCartsPerRun int
param reminderSteps string
param siteUrl string
param returnToCartUrlTemplate string
param unsubscribeUrlTemplate string
param imageBaseUrl string
param emailProvider string
param dryRun bool
param emarsysAuth string
param emarsysApiUrl string
param emarsysEventId string
param emarsysKeyId string
param emarsysCreateMissingContacts bool
param sendgridTemplateId string
param sendgridFromEmail string
param sendgridFromName string
param webhookUrl string
param fnoUrl string
param fnoClientId string
param easyAuthEnabled bool
param customersAppRole string
param apiClientId string
param apiAudience string
param duplicateCheckEnabled bool
param cposUrl string

// Tuning: the code's defaults unless the operator sets them. The seconds that may be fractional
// are strings (Bicep has no decimal type); Settings checks their bounds.
param entraAuthorityHost string
param secretCacheTtlSeconds int
param httpTimeoutSeconds string
param httpConnectTimeoutSeconds string
param httpMaxAttempts int
param httpBackoffBaseSeconds string
param httpBackoffMaxSeconds string
param maxResponseBytes int
param keyVaultTimeoutSeconds string
param keyVaultMaxAttempts int
param cosmosTimeoutSeconds string
param cosmosMaxAttempts int
param retailServerApiVersion string
param cartPageSize int
param imageViewports string
param coalesceWindowMs int
param productCacheTtlSeconds int
param channelCacheTtlSeconds int
param emarsysAuthUrl string
param emarsysClientIdSecretName string
param emarsysClientSecretName string
param emarsysWsseUserSecretName string
param emarsysWsseSecretName string
param sendgridApiUrl string
param sendgridApiKeySecretName string
param sendgridUnsubscribeGroupId string
param webhookSigningSecretName string
param fnoCreateCustomerPath string
param fnoCustomersEntity string
param fnoClientSecretName string
param fnoTimeoutSeconds string
param fnoMaxAttempts int
param fnoMaxRetryWaitSeconds string
param idempotencyTtlHours int
param customerMaxBodyBytes int
param unsubscribeSigningSecretName string
param unsubscribeLinkDays int
param privacyAppRole string

// The code's default IMAGE_VIEWPORTS (shared/settings.py) as compact JSON, used when the
// parameter is empty: azd cannot hold it as a ${VAR=default}, whose default ends at the first }.
var defaultImageViewports = '[{"media":"(max-width:768px)","width":80,"height":80,"default":false},{"media":"(min-width:769px) and (max-width:1599px)","width":183,"height":183,"default":false},{"media":"(min-width:1600px)","width":315,"height":315,"default":true}]'

// The app settings. EMARSYS_EVENT_ID and SENDGRID_UNSUBSCRIBE_GROUP_ID are numbers to the code, so
// they are left out rather than set empty; every other optional value may be empty (it means unset).
// Keep comments inside the list to four lines or fewer: the pycep parser checkov bundles (0.5.1)
// fails on five comment lines in a row there, and the file then goes unscanned.
var appSettings = [
  // Host storage through the identity; the table endpoint is left out because nothing the app
  // runs (timer, queue trigger, queue output) uses tables.
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identity.properties.clientId
  }
  // Telemetry: local auth is off on the component, so the host signs in as the identity.
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  }
  // DefaultAzureCredential (Key Vault, Cosmos DB) picks the user-assigned identity by this, and
  // ENTRA_CREDENTIAL=federated presents this identity's token to Entra ID.
  {
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  // The Python worker makes the host's invocation span current, so the app's spans join it.
  {
    name: 'PYTHON_ENABLE_OPENTELEMETRY'
    value: 'true'
  }

  {
    name: 'LOG_LEVEL'
    value: logLevel
  }
  {
    name: 'TELEMETRY_SAMPLING_PERCENTAGE'
    value: string(telemetrySamplingPercentage)
  }
  {
    name: 'KEY_VAULT_URL'
    value: keyVaultUri
  }
  {
    name: 'ENTRA_TENANT_ID'
    value: entraTenantId
  }
  {
    name: 'ENTRA_CLIENT_ID'
    value: entraClientId
  }
  {
    name: 'ENTRA_CREDENTIAL'
    value: entraCredential
  }
  {
    name: 'ENTRA_CLIENT_SECRET_NAME'
    value: entraClientSecretName
  }
  {
    name: 'ENTRA_AUTHORITY_HOST'
    value: entraAuthorityHost
  }
  {
    name: 'SECRET_CACHE_TTL_SECONDS'
    value: string(secretCacheTtlSeconds)
  }
  // Every upstream call: timeouts, attempts and the backoff between them.
  {
    name: 'HTTP_TIMEOUT_SECONDS'
    value: httpTimeoutSeconds
  }
  {
    name: 'HTTP_CONNECT_TIMEOUT_SECONDS'
    value: httpConnectTimeoutSeconds
  }
  {
    name: 'HTTP_MAX_ATTEMPTS'
    value: string(httpMaxAttempts)
  }
  {
    name: 'HTTP_BACKOFF_BASE_SECONDS'
    value: httpBackoffBaseSeconds
  }
  {
    name: 'HTTP_BACKOFF_MAX_SECONDS'
    value: httpBackoffMaxSeconds
  }
  // Key Vault and Cosmos DB calls: each request's timeout, and the attempts.
  {
    name: 'KEY_VAULT_TIMEOUT_SECONDS'
    value: keyVaultTimeoutSeconds
  }
  {
    name: 'KEY_VAULT_MAX_ATTEMPTS'
    value: string(keyVaultMaxAttempts)
  }
  {
    name: 'COSMOS_TIMEOUT_SECONDS'
    value: cosmosTimeoutSeconds
  }
  {
    name: 'COSMOS_MAX_ATTEMPTS'
    value: string(cosmosMaxAttempts)
  }
  {
    name: 'MAX_RESPONSE_BYTES'
    value: string(maxResponseBytes)
  }
  {
    name: 'STATE_STORE'
    value: 'cosmos'
  }
  {
    name: 'COSMOS_ENDPOINT'
    value: cosmosEndpoint
  }
  {
    name: 'COSMOS_DATABASE'
    value: cosmosDatabaseName
  }
  {
    name: 'COSMOS_LEDGER_CONTAINER'
    value: cosmosLedgerContainerName
  }
  {
    name: 'COSMOS_STATE_CONTAINER'
    value: cosmosStateContainerName
  }
  {
    name: 'RETAIL_SERVER_URL'
    value: retailServerUrl
  }
  {
    name: 'RETAIL_SERVER_AUDIENCE'
    value: retailServerAudience
  }
  {
    name: 'RETAIL_SERVER_API_VERSION'
    value: retailServerApiVersion
  }
  {
    name: 'OPERATING_UNIT_NUMBERS'
    value: operatingUnitNumbers
  }
  // The host resolves %DETECT_SCHEDULE% and %DETECTION_QUEUE_NAME% in the bindings itself,
  // so these two must be real app settings, not just code defaults.
  {
    name: 'DETECT_SCHEDULE'
    value: detectSchedule
  }
  {
    name: 'DETECTION_QUEUE_NAME'
    value: detectionQueueName
  }
  // The detection window and its bound per run.
  {
    name: 'LOOKBACK_MINUTES'
    value: string(lookbackMinutes)
  }
  {
    name: 'ABANDONED_AFTER_MINUTES'
    value: string(abandonedAfterMinutes)
  }
  {
    name: 'MAX_CARTS_PER_RUN'
    value: string(maxCartsPerRun)
  }
  {
    name: 'CART_PAGE_SIZE'
    value: string(cartPageSize)
  }

  // Notify. An empty URL or template means "not set" to the code (shared/settings.py).
  {
    name: 'CONSENT_POLICY'
    value: consentPolicy
  }
  {
    name: 'FREQUENCY_CAP_HOURS'
    value: string(frequencyCapHours)
  }
  {
    name: 'ORDER_CHECK'
    value: orderCheck ? 'true' : 'false'
  }

  // Recovery analytics: the holdout group and conversion tracking. The host resolves
  // %TRACK_SCHEDULE% in the binding itself, so it must be a real app setting.
  {
    name: 'HOLDOUT_PERCENT'
    value: string(holdoutPercent)
  }
  {
    name: 'HOLDOUT_PERIOD_DAYS'
    value: string(holdoutPeriodDays)
  }
  {
    name: 'HOLDOUT_SALT_SECRET_NAME'
    value: holdoutSaltSecretName
  }
  {
    name: 'ATTRIBUTION_DAYS'
    value: string(attributionDays)
  }
  {
    name: 'TRACK_SCHEDULE'
    value: trackSchedule
  }
  {
    name: 'MAX_TRACKED_CARTS_PER_RUN'
    value: string(maxTrackedCartsPerRun)
  }
  {
    name: 'REMINDER_STEPS'
    value: reminderSteps
  }
  {
    name: 'SITE_URL'
    value: siteUrl
  }
  {
    name: 'RETURN_TO_CART_URL_TEMPLATE'
    value: returnToCartUrlTemplate
  }
  {
    name: 'UNSUBSCRIBE_URL_TEMPLATE'
    value: unsubscribeUrlTemplate
  }
  {
    name: 'IMAGE_BASE_URL'
    value: imageBaseUrl
  }
  {
    name: 'IMAGE_VIEWPORTS'
    value: empty(imageViewports) ? defaultImageViewports : imageViewports
  }
  {
    name: 'COALESCE_WINDOW_MS'
    value: string(coalesceWindowMs)
  }
  {
    name: 'PRODUCT_CACHE_TTL_SECONDS'
    value: string(productCacheTtlSeconds)
  }
  {
    name: 'CHANNEL_CACHE_TTL_SECONDS'
    value: string(channelCacheTtlSeconds)
  }

  // Email provider. Booleans are written as true or false (string() in ARM would give True).
  {
    name: 'EMAIL_PROVIDER'
    value: emailProvider
  }
  {
    name: 'DRY_RUN'
    value: dryRun ? 'true' : 'false'
  }
  // Flex Consumption runs the app from its deployment package, mounted read-only, so the code
  // default (out/previews, relative to the app root) cannot be written. /tmp is each instance's
  // local scratch disk: writable, but not shared and lost on recycling, so dry-run previews are
  // throw-away there; the outcome of every message is in Application Insights.
  {
    name: 'PREVIEW_DIR'
    value: '/tmp/previews'
  }
  {
    name: 'EMARSYS_AUTH'
    value: emarsysAuth
  }
  {
    name: 'EMARSYS_API_URL'
    value: emarsysApiUrl
  }
  {
    name: 'EMARSYS_AUTH_URL'
    value: emarsysAuthUrl
  }
  {
    name: 'EMARSYS_KEY_ID'
    value: emarsysKeyId
  }
  {
    name: 'EMARSYS_CREATE_MISSING_CONTACTS'
    value: emarsysCreateMissingContacts ? 'true' : 'false'
  }
  // Names of Key Vault secrets, never the secrets themselves.
  {
    name: 'EMARSYS_CLIENT_ID_SECRET_NAME'
    value: emarsysClientIdSecretName
  }
  {
    name: 'EMARSYS_CLIENT_SECRET_NAME'
    value: emarsysClientSecretName
  }
  {
    name: 'EMARSYS_WSSE_USER_SECRET_NAME'
    value: emarsysWsseUserSecretName
  }
  {
    name: 'EMARSYS_WSSE_SECRET_NAME'
    value: emarsysWsseSecretName
  }
  {
    name: 'SENDGRID_API_URL'
    value: sendgridApiUrl
  }
  {
    name: 'SENDGRID_API_KEY_SECRET_NAME'
    value: sendgridApiKeySecretName
  }
  {
    name: 'SENDGRID_TEMPLATE_ID'
    value: sendgridTemplateId
  }
  {
    name: 'SENDGRID_FROM_EMAIL'
    value: sendgridFromEmail
  }
  {
    name: 'SENDGRID_FROM_NAME'
    value: sendgridFromName
  }
  {
    name: 'WEBHOOK_URL'
    value: webhookUrl
  }
  {
    name: 'WEBHOOK_SIGNING_SECRET_NAME'
    value: webhookSigningSecretName
  }

  // Customers (POST /api/customers). An empty FNO_URL leaves the endpoint answering 503.
  {
    name: 'FNO_URL'
    value: fnoUrl
  }
  {
    name: 'FNO_CREATE_CUSTOMER_PATH'
    value: fnoCreateCustomerPath
  }
  {
    name: 'FNO_CUSTOMERS_ENTITY'
    value: fnoCustomersEntity
  }
  {
    name: 'FNO_CLIENT_ID'
    value: fnoClientId
  }
  {
    name: 'FNO_CLIENT_SECRET_NAME'
    value: fnoClientSecretName
  }
  // The till waits for these calls: few attempts, short waits.
  {
    name: 'FNO_TIMEOUT_SECONDS'
    value: fnoTimeoutSeconds
  }
  {
    name: 'FNO_MAX_ATTEMPTS'
    value: string(fnoMaxAttempts)
  }
  {
    name: 'FNO_MAX_RETRY_WAIT_SECONDS'
    value: fnoMaxRetryWaitSeconds
  }
  {
    name: 'EASY_AUTH_ENABLED'
    value: easyAuthEnabled ? 'true' : 'false'
  }
  {
    name: 'CUSTOMERS_APP_ROLE'
    value: customersAppRole
  }
  {
    name: 'DUPLICATE_CHECK_ENABLED'
    value: duplicateCheckEnabled ? 'true' : 'false'
  }
  {
    name: 'IDEMPOTENCY_TTL_HOURS'
    value: string(idempotencyTtlHours)
  }
  {
    name: 'CPOS_URL'
    value: cposUrl
  }
  {
    name: 'CUSTOMER_MAX_BODY_BYTES'
    value: string(customerMaxBodyBytes)
  }

  // Privacy: the unsubscribe link's signing secret (by name) and the erasure endpoint's app role.
  {
    name: 'UNSUBSCRIBE_SIGNING_SECRET_NAME'
    value: unsubscribeSigningSecretName
  }
  {
    name: 'UNSUBSCRIBE_LINK_DAYS'
    value: string(unsubscribeLinkDays)
  }
  {
    name: 'PRIVACY_APP_ROLE'
    value: privacyAppRole
  }

  // Callers of the HTTP endpoints prove app roles with Entra tokens for this app registration.
  {
    name: 'API_CLIENT_ID'
    value: apiClientId
  }
  {
    name: 'API_AUDIENCE'
    value: apiAudience
  }
]

var emarsysEventIdSetting = empty(emarsysEventId) ? [] : [
  {
    name: 'EMARSYS_EVENT_ID'
    value: emarsysEventId
  }
]

var sendgridUnsubscribeGroupIdSetting = empty(sendgridUnsubscribeGroupId) ? [] : [
  {
    name: 'SENDGRID_UNSUBSCRIBE_GROUP_ID'
    value: sendgridUnsubscribeGroupId
  }
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy for Flex Consumption is offered only in some regions; it is an opt-in per region, not a default that fails deployments elsewhere.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // Linux.
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:The HTTP functions are called from outside Azure (Store Commerce, the e-commerce site, the mailbox of whoever clicks an unsubscribe link); access is controlled by function keys, Entra tokens with app roles (erasure always) and App Service authentication when easyAuthEnabled (docs/how-to/easy-auth.md).
  // checkov:skip=CKV_AZURE_17:Callers authenticate with function keys and Entra tokens (docs/how-to/easy-auth.md); POS devices do not hold client certificates.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design; always-ready instances are a cost choice left to the operator.
  // checkov:skip=CKV_AZURE_213:The app serves no health endpoint; its timer and queue functions report failures to Application Insights, and instances scale to zero between runs.
  name: name
  location: location
  // azd finds the app to deploy the `api` service to by this tag.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identity.id
    // With private networking the app reaches Storage, Cosmos DB and Key Vault through this subnet.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // The whole settings list: a redeployment replaces it, so what is here is all the app has.
      appSettings: concat(appSettings, emarsysEventIdSetting, sendgridUnsubscribeGroupIdSetting)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// App Service authentication (Easy Auth) with the API's app registration. Unauthenticated requests
// go on to the functions (AllowAnonymous), because the POS tills call /api/customers with their
// function key alone; a token that is presented is validated by the platform, which then passes
// its claims in X-MS-CLIENT-PRINCIPAL (and strips that header from what callers send). The code
// decides: /api/privacy/erasure always requires PRIVACY_APP_ROLE, the customers endpoints
// CUSTOMERS_APP_ROLE when EASY_AUTH_ENABLED. /api/unsubscribe is excluded: the link in the email
// carries its own signature and must keep working even if authentication is made mandatory.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (easyAuthEnabled && !empty(apiClientId)) {
  // checkov reads every Microsoft.Web/sites/config as the site's web configuration; this one is the
  // authsettingsV2 document, where the following site checks have no property to find.
  // checkov:skip=CKV_AZURE_13:This resource is App Service authentication itself (platform.enabled, the Entra provider).
  // checkov:skip=CKV_AZURE_63:HTTP logging is a site setting, not part of the authsettingsV2 document; the site's telemetry goes to Application Insights.
  // checkov:skip=CKV_AZURE_65:Detailed error messages are a site setting, not part of the authsettingsV2 document.
  // checkov:skip=CKV_AZURE_66:Failed request tracing is a site setting, not part of the authsettingsV2 document.
  // checkov:skip=CKV_AZURE_80:The app runs Python 3.11 on Linux; no .NET Framework version exists here or on the site.
  // checkov:skip=CKV_AZURE_88:Azure Files is a site setting, not part of the authsettingsV2 document; Flex Consumption deploys from a blob container.
  // checkov:skip=CKV_AZURE_222:Public network access is a site setting, not part of the authsettingsV2 document; see the site's own skip.
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
      excludedPaths: [
        '/api/unsubscribe'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: '${entraAuthorityHost}/${entraTenantId}/v2.0'
          clientId: apiClientId
        }
        validation: {
          allowedAudiences: [
            apiClientId
            empty(apiAudience) ? 'api://${apiClientId}' : apiAudience
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

// No FTP or basic-auth deployments; azd deploys with an Entra token.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
