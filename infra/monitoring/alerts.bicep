// Log search alerts on the connector's telemetry, and the action group that mails the operator.
// Every query is a .kql file beside this one (tests/infra parse them); the values an operator
// chooses reach a query either as the rule's threshold or as `let` statements put before the file.
// The rules query the Application Insights component with its own (classic) table names and run
// without an identity of their own, so they need no role on anything.
param location string = resourceGroup().location
param tags object = {}

@description('Prefix of the rule and action group names.')
param namePrefix string
param applicationInsightsName string

@description('Where alerts are mailed. Empty: the rules still run and show fired alerts in Azure Monitor, but nobody is notified.')
param alertEmailAddress string

@description('Six-field NCRONTAB schedule of the detection timer (DETECT_SCHEDULE).')
param detectSchedule string
@description('Minutes between detection runs; 0 derives them from detectSchedule.')
param detectionPeriodMinutes int

@description('Comma-separated operating unit numbers (OPERATING_UNIT_NUMBERS) the no-carts rule checks one by one.')
param operatingUnitNumbers string
@description('Hours without a cart found, during business hours, after which a channel is reported; 0 turns the rule off.')
param noCartsHours int
param businessHoursStartUtc int
param businessHoursEndUtc int
@description('Business days as KQL dayofweek numbers, comma-separated: 0 Sunday to 6 Saturday.')
param businessDays string

param failedInvocationsThreshold int
param customerServerErrorPercent int
param customerMinimumCalls int

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// --- the detection period, read from the NCRONTAB schedule -------------------------------------
// second minute hour day month weekday. Recognised: "*/N" minutes, every minute, a fixed minute
// (hourly), a fixed minute with "*/N" hours, a fixed minute and hour (daily), and a list of
// minutes in every hour (taken as evenly spaced). Anything else counts as daily; set
// detectionPeriodMinutes for it. Day, month and weekday are not read: a schedule that skips days
// needs detectionPeriodMinutes too. (Parenthesised throughout: tests/infra evaluate this with pycep.)
var scheduleFields = split(trim(detectSchedule), ' ')
var minuteField = (length(scheduleFields) == 6) ? scheduleFields[1] : ''
var hourField = (length(scheduleFields) == 6) ? scheduleFields[2] : ''
var everyHour = (hourField == '*')
var minuteIsFixed = (!(empty(minuteField))) && (!(contains(minuteField, '*'))) && (!(contains(minuteField, '/'))) && (!(contains(minuteField, ','))) && (!(contains(minuteField, '-')))
var hourIsFixed = (!(empty(hourField))) && (!(contains(hourField, '*'))) && (!(contains(hourField, '/'))) && (!(contains(hourField, ','))) && (!(contains(hourField, '-')))
var minuteIsList = (contains(minuteField, ',')) && (!(contains(minuteField, '*'))) && (!(contains(minuteField, '/'))) && (!(contains(minuteField, '-')))
var stepMinutes = ((startsWith(minuteField, '*/')) && everyHour) ? int(substring(minuteField, 2)) : 0
var stepHours = (minuteIsFixed && (startsWith(hourField, '*/'))) ? int(substring(hourField, 2)) : 0
var minutesPerHour = (minuteIsList && everyHour) ? length(split(minuteField, ',')) : 0
var hourlyOrDaily = (minuteIsFixed && everyHour) ? 60 : ((minuteIsFixed && hourIsFixed) ? 1440 : 0)
var derivedFromSteps = (stepMinutes > 0) ? stepMinutes : ((stepHours > 0) ? (60 * stepHours) : 0)
var derivedFromLists = (minutesPerHour > 0) ? (60 / minutesPerHour) : (((minuteField == '*') && everyHour) ? 1 : hourlyOrDaily)
var derivedPeriodMinutes = (derivedFromSteps > 0) ? derivedFromSteps : ((derivedFromLists > 0) ? derivedFromLists : 1440)
var periodMinutes = (detectionPeriodMinutes > 0) ? detectionPeriodMinutes : derivedPeriodMinutes
// Three periods, at least 15 minutes (ingestion delay, a long run), at most the two days the
// query reads (it reports 2880 when it finds no run at all).
var stalledAfterMinutes = min(max(3 * periodMinutes, 15), 2879)

// --- values the queries read as `let` statements --------------------------------------------------
var channels = split(replace(operatingUnitNumbers, ' ', ''), ',')
var channelsJson = string(channels)
var noCartsDeclarations = 'let noCartsHours = ${noCartsHours};\nlet businessStartHour = ${businessHoursStartUtc};\nlet businessEndHour = ${businessHoursEndUtc};\nlet businessDays = dynamic([${businessDays}]);\nlet channels = dynamic(${channelsJson});\n'
var customerDeclarations = 'let minimumCalls = ${customerMinimumCalls};\n'

var notify = !empty(alertEmailAddress)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: 'ag-${namePrefix}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'connector'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

var actions = {
  actionGroups: notify ? [actionGroup.id] : []
}

resource poisonMessages 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-poison-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Abandoned carts: messages in the poison queue'
    description: 'A queue message reached its poison queue in the last day (the notification failed maxDequeueCount times, or the message could not be read). See docs/troubleshooting.md, "Poison messages".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'P1D'
    criteria: {
      allOf: [
        {
          query: loadTextContent('alerts/poison-messages.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'poisoned'
          dimensions: [
            {
              name: 'queue'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource failedInvocations 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-failed-invocations'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Abandoned carts: failed invocations'
    description: 'Detection runs or notifications failed in the last 15 minutes. See docs/troubleshooting.md, "Failed invocations".'
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('alerts/failed-invocations.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          dimensions: [
            {
              name: 'functionName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: failedInvocationsThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource detectionStalled 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-detection-stalled'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Abandoned carts: no detection run completed'
    description: 'No detection run succeeded for ${stalledAfterMinutes} minutes (three periods of DETECT_SCHEDULE). See docs/troubleshooting.md, "No detection run completed".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'P2D'
    criteria: {
      allOf: [
        {
          query: loadTextContent('alerts/detection-stalled.kql')
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'minutesSinceLastRun'
          operator: 'GreaterThan'
          threshold: stalledAfterMinutes
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource noCartsInBusinessHours 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-no-carts'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Abandoned carts: a channel found no carts during business hours'
    description: 'A channel found no abandoned cart in the last ${noCartsHours} hours of business hours (${businessHoursStartUtc}:00-${businessHoursEndUtc}:00 UTC). See docs/troubleshooting.md, "No carts found".'
    severity: 2
    enabled: noCartsHours > 0
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P1D'
    criteria: {
      allOf: [
        {
          query: '${noCartsDeclarations}${loadTextContent('alerts/no-carts-in-business-hours.kql')}'
          timeAggregation: 'Total'
          metricMeasureColumn: 'cartsFound'
          dimensions: [
            {
              name: 'oun'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource customerServerErrors 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-customer-server-errors'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CreateCustomer: 5xx answers'
    description: 'More than ${customerServerErrorPercent} % of POST /api/customers calls in 15 minutes were answered with a 5xx (at least ${customerMinimumCalls} calls). See docs/troubleshooting.md, "CreateCustomer 409, 502, 504".'
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: '${customerDeclarations}${loadTextContent('alerts/customer-server-errors.kql')}'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'serverErrorPercent'
          operator: 'GreaterThan'
          threshold: customerServerErrorPercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource credentialFailures 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-credential-failures'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Abandoned carts and customers: token or Key Vault failures'
    description: 'Entra ID refused or failed a token request, or a Key Vault read failed, in the last 15 minutes. See docs/troubleshooting.md, "Key Vault access denied" and "401 from Retail Server".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('alerts/credential-failures.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          dimensions: [
            {
              name: 'source'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

output actionGroupId string = notify ? actionGroup.id : ''
output detectionPeriodMinutes int = periodMinutes
output stalledAfterMinutes int = stalledAfterMinutes
