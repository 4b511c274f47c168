// Cosmos DB for NoSQL, serverless, reachable only with Entra ID (data-plane RBAC). The database and
// containers are declared here because data-plane roles cannot create them from app code.
param accountName string
param location string = resourceGroup().location
param tags object = {}
param databaseName string

@description('Containers of the state store. Each is partitioned on /pk and lets items expire through their own ttl.')
param containerNames array

@description('Disabled when the account is reached through a private endpoint only (main.bicep vnetEnabled).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  // checkov:skip=CKV_AZURE_101:Public mode (vnetEnabled false): without VNet integration a Flex app has no fixed egress address; access is Entra ID only (local auth off) with data-plane RBAC to one identity.
  // checkov:skip=CKV_AZURE_99:Public mode (vnetEnabled false): an IP filter cannot name the Flex app's outbound addresses; keys are disabled so only the app identity gets in.
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: publicNetworkAccess
    // Serverless accounts are single-region, so writes go to one region only; said explicitly.
    enableMultipleWriteLocations: false
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: 'Continuous7Days'
      }
    }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource containers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [
  for containerName in containerNames: {
    parent: database
    name: containerName
    properties: {
      resource: {
        id: containerName
        partitionKey: {
          paths: [
            '/pk'
          ]
          kind: 'Hash'
          version: 2
        }
        // -1: TTL is on but nothing expires unless an item carries its own ttl.
        defaultTtl: -1
      }
    }
  }
]

output accountName string = account.name
output id string = account.id
output endpoint string = account.properties.documentEndpoint
