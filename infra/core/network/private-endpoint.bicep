// One private endpoint of the private-networking option, with the private DNS zone Azure documents
// for its sub-resource (docs/how-to/private-networking.md) linked to the network. Inside the network the
// service's usual host name (<account>.blob.core.windows.net, ...) then resolves to the endpoint's
// private address, so the app's settings and SDKs stay as they are.
param name string
param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the service the endpoint connects to.')
param serviceId string

@description('The service\'s private-link sub-resource: blob, queue, Sql (Cosmos DB for NoSQL) or vault.')
@allowed([
  'blob'
  'queue'
  'Sql'
  'vault'
])
param groupId string

@description('Private DNS zone of that sub-resource, e.g. privatelink.blob.core.windows.net.')
param dnsZoneName string

param vnetId string
param subnetId string

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: dnsZoneName
  location: 'global'
  tags: tags
}

resource link 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: zone
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: serviceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: groupId
        properties: {
          privateDnsZoneId: zone.id
        }
      }
    ]
  }
}
