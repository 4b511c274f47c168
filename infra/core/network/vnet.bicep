// The virtual network of the private-networking option (main.bicep vnetEnabled). One subnet is
// delegated to Microsoft.App/environments, the delegation Flex Consumption's VNet integration
// requires, and holds nothing else; the private endpoints of Storage, Cosmos DB and Key Vault get a
// subnet of their own. With outbound 'natGateway' the app's subnet sends internet traffic through a
// NAT gateway with one static public IP, the address a retailer allow-lists at Retail Server's,
// F&O's or the email provider's firewall.
param name string
param location string = resourceGroup().location
param tags object = {}

@description('Address space of the network.')
param addressPrefix string

@description('Subnet the function app integrates with; Flex Consumption takes an address per instance, so leave room for maximumInstanceCount.')
param appSubnetPrefix string

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string

@description('natGateway: a NAT gateway with a static public IP on the app subnet. default: the platform\'s own outbound addresses.')
@allowed([
  'natGateway'
  'default'
])
param outbound string = 'natGateway'

param natGatewayName string
param publicIpName string

var useNatGateway = outbound == 'natGateway'

resource publicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = if (useNatGateway) {
  name: publicIpName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Regional'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

// Not named natGateway: the tests' Bicep reader would take the literal 'natGateway' for it.
resource gateway 'Microsoft.Network/natGateways@2024-05-01' = if (useNatGateway) {
  name: natGatewayName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: publicIp.id
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          natGateway: useNatGateway ? {
            id: gateway.id
          } : null
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

output id string = vnet.id
output appSubnetId string = '${vnet.id}/subnets/app'
output privateEndpointSubnetId string = '${vnet.id}/subnets/private-endpoints'
output outboundIpAddress string = useNatGateway ? publicIp.properties.ipAddress : ''
