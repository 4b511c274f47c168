// The operator's workbook: detection, notification, the email provider, the poison queue,
// CreateCustomer and failures on one page. Its content is workbook.json beside this file (edit it
// in the portal's Advanced Editor and paste it back); the placeholders in it are filled in here.
param location string = resourceGroup().location
param tags object = {}

@description('Display name in Azure Monitor > Workbooks and under the Application Insights resource.')
param displayName string
param applicationInsightsName string
param storageAccountName string

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// The queries run against the Application Insights resource the workbook belongs to; the metrics
// chart reads the storage account's queue service.
var withComponent = replace(loadTextContent('workbook.json'), '__APPLICATION_INSIGHTS_ID__', applicationInsights.id)
var content = replace(withComponent, '__QUEUE_SERVICE_ID__', '${storage.id}/queueServices/default')

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name is a GUID; this one is stable per resource group, so a redeployment updates it.
  name: guid(resourceGroup().id, 'd365-commerce-connector-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: content
    version: 'Notebook/1.0'
  }
}

output id string = workbook.id
