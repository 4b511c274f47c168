"""The workbook and the alerts in infra/monitoring: their queries, their wiring, their reach.

Every query is read the way Azure receives it (a rule's `let` declarations put before its .kql
file, the workbook's parameters filled in) and checked by tests/infra/kql.py against the classic
Application Insights tables. The names the queries look for are the telemetry contract between the
code and the infrastructure (``CONTRACT_METRICS``, ``CONTRACT_RECORDS``): a query may only use
those, so a renamed metric fails here instead of leaving a chart empty and an alert silent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra import kql
from tests.infra.bicep import INFRA, Opaque, ParamRef, Template, main

MONITORING = INFRA / "monitoring"
ALERTS = Template(MONITORING / "alerts.bicep")
WORKBOOK = Template(MONITORING / "workbook.bicep")
WORKBOOK_JSON = MONITORING / "workbook.json"

RULE_TYPE = "Microsoft.Insights/scheduledQueryRules"

# The metrics the code emits (OpenTelemetry, scope d365_commerce_connector) and their dimensions.
CONTRACT_METRICS: dict[str, set[str]] = {
    "connector.carts.found": {"oun"},
    "connector.carts.queued": {"oun"},
    "connector.carts.skipped": {"oun", "reason"},
    "connector.detection.lag": {"oun"},
    "connector.detection.backlog": {"oun"},
    "connector.detection.runs": {"status"},
    "connector.notify.outcomes": {"outcome", "reason", "provider", "step", "degraded"},
    "connector.provider.duration": {"provider", "status"},
    "connector.provider.batch_size": {"provider"},
    "connector.customers.created": {"status", "outcome"},
    "connector.customers.duration": {"status"},
    "connector.tokens.acquired": {"service", "result"},
    "connector.secrets.failures": {"reason"},
    "connector.messages.poisoned": {"queue"},
    "connector.upstream.duration": {"service", "route", "status"},
    "connector.recovery.settled": {"oun", "group", "status", "match"},
    "connector.recovery.conversions": {"oun", "group", "channel", "match", "currency"},
    "connector.recovery.revenue": {"oun", "group", "channel", "match", "currency"},
    "connector.recovery.tracking_runs": {"status"},
}

# The structured log records (customDimensions.event) and their custom dimensions.
CONTRACT_RECORDS: dict[str, set[str]] = {
    "detection_run": {
        "run_id",
        "status",
        "carts_found",
        "carts_queued",
        "carts_skipped",
        "channels_failed",
        "duration_ms",
    },
    "notify_outcome": {"outcome", "reason", "oun", "provider", "step", "cart_id", "cart_version", "degraded"},
    "create_customer": {"status", "outcome", "duration_ms"},
    "message_poisoned": {"queue", "dequeue_count"},
    "token_failure": {"service", "error"},
    "secret_failure": {"reason"},
    "conversion_tracking": {
        "status",
        "carts_checked",
        "customers",
        "conversions_recorded",
        "carts_converted",
        "carts_not_converted",
        "failed_customers",
        "off_reason",
        "duration_ms",
    },
}

# The Functions host's own warning when it moves a message to <queue>-poison (the WebJobs queue
# listener: "Message has reached MaxDequeueCount of {n}. Moving message to queue '{queue}'.").
HOST_POISON_WARNING = "Message has reached MaxDequeueCount"

# What main.bicep passes besides its own parameters' defaults, for a deployment to evaluate.
MAIN_ARGUMENTS = {
    "environmentName": "commerce-prod",
    "location": "westeurope",
    "entraClientId": "00000000-0000-0000-0000-000000000001",
    "retailServerUrl": "https://contoso.commerce.dynamics.com",
    "operatingUnitNumbers": "128, 129",
}

_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")
_LOAD = re.compile(r"\$\{loadTextContent\('([^']+)'\)\}")
_AGO = re.compile(r"ago\((\d+)([dhm])\)")


def _minutes(duration: str) -> int:
    match = _ISO.match(duration)
    assert match and duration not in ("P", "PT"), (
        f"not an ISO 8601 duration of days, hours, minutes: {duration}"
    )
    days, hours, minutes = (int(part or 0) for part in match.groups())
    return days * 1440 + hours * 60 + minutes


def _unescape_bicep(text: str) -> str:
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", "$": "$"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), text)


def _alerts_arguments(**main_overrides: Any) -> dict[str, Any]:
    """What main.bicep passes to infra/monitoring/alerts.bicep for a deployment with these values."""
    return main().module_arguments("alerts", {**MAIN_ARGUMENTS, **main_overrides})


def _rules() -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = ALERTS.resources_of_type(RULE_TYPE)
    assert len(rules) == 6, sorted(rules)
    return rules


def _condition(symbol: str) -> dict[str, Any]:
    (condition,) = _rules()[symbol]["properties"]["criteria"]["allOf"]
    assert isinstance(condition, dict)
    return condition


def _query_files(symbol: str) -> list[str]:
    query = _condition(symbol)["query"]
    if isinstance(query, dict):
        assert query["function"]["type"] == "load_text_content"
        return [query["function"]["parameters"]["file_path"]]
    return _LOAD.findall(query)


def _query(symbol: str, **main_overrides: Any) -> str:
    """The rule's query as Azure receives it: its declarations, then the .kql file."""
    query = _condition(symbol)["query"]
    (path,) = _query_files(symbol)
    text = (MONITORING / path).read_text()
    if isinstance(query, dict):
        return text
    sentinel = "\x00query-file\x00"
    declarations = ALERTS.evaluate(_LOAD.sub(sentinel, query), _alerts_arguments(**main_overrides))
    assert isinstance(declarations, str), f"{symbol}: its declarations do not evaluate: {declarations!r}"
    return _unescape_bicep(declarations).replace(sentinel, text)


def _workbook() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(WORKBOOK_JSON.read_text())
    return parsed


def _workbook_queries() -> dict[str, str]:
    return {
        item["name"]: item["content"]["query"].replace("{TimeRange:grain}", "1h")
        for item in _workbook()["items"]
        if item["type"] == 3
    }


def _all_queries() -> dict[str, str]:
    queries = {f"alert {symbol}": _query(symbol) for symbol in _rules()}
    queries.update({f"workbook {name}": query for name, query in _workbook_queries().items()})
    return queries


# ----- the KQL reader itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("traces | where (message has 'x'", "never closed"),
        ("traces | where message == 'x)", "does not close"),
        ("AppTraces | take 1", "workspace"),
        ("customEvents | take 1", "neither a table nor a let"),
        ("traces | where customDimension.event == 'x'", "no column"),
        ("customMetrics | where message == 'x'", "no column"),
        ("traces | summarize n = count() by bin(TimeGenerated, 1h)", "no column"),
    ],
)
def test_the_kql_reader_refuses_what_azure_would(query: str, complaint: str) -> None:
    with pytest.raises(kql.KqlError, match=complaint):
        kql.check(query)


def test_the_kql_reader_accepts_lets_unions_and_defined_columns() -> None:
    report = kql.check(
        "let since = ago(1h);\n"
        "let runs = traces | where timestamp > since | project runAt = timestamp;\n"
        "union (runs), (customMetrics | project runAt = timestamp)\n"
        "| summarize last = max(runAt) | extend minutes = (now() - last) / 1m"
    )
    assert report.tables == {"traces", "customMetrics"}
    assert {"since", "runs"} <= report.lets


# ----- the alert rules ---------------------------------------------------------------------------


def test_every_query_file_belongs_to_exactly_one_rule() -> None:
    loaded = [path for symbol in _rules() for path in _query_files(symbol)]
    assert all(len(_query_files(symbol)) == 1 for symbol in _rules())
    on_disk = sorted(f"alerts/{path.name}" for path in (MONITORING / "alerts").glob("*.kql"))
    assert sorted(loaded) == on_disk


@pytest.mark.parametrize("name", sorted(_all_queries()))
def test_query_reads_only_classic_application_insights_tables_and_columns(name: str) -> None:
    report = kql.check(_all_queries()[name])
    assert report.tables <= set(kql.TABLES)


@pytest.mark.parametrize("name", sorted(_all_queries()))
def test_query_uses_only_the_telemetry_contract(name: str) -> None:
    query = _all_queries()[name]
    metrics = set(re.findall(r'"(connector\.[a-z_.]+)"', query))
    events = set(re.findall(r'customDimensions\.event\) == "([a-z_]+)"', query))
    assert metrics <= set(CONTRACT_METRICS), metrics - set(CONTRACT_METRICS)
    assert events <= set(CONTRACT_RECORDS), events - set(CONTRACT_RECORDS)
    allowed = {"event"}.union(*(CONTRACT_METRICS[m] for m in metrics), *(CONTRACT_RECORDS[e] for e in events))
    used = set(re.findall(r"customDimensions\.([A-Za-z_][A-Za-z0-9_]*)", query))
    assert used <= allowed, f"dimensions outside the contract: {sorted(used - allowed)}"
    host_lines = [s for s in re.findall(r'"([^"]*)"', query) if s.startswith("Message has")]
    assert all(line == HOST_POISON_WARNING for line in host_lines)


@pytest.mark.parametrize("symbol", sorted(_rules()))
def test_rule_measures_a_column_its_query_makes(symbol: str) -> None:
    condition = _condition(symbol)
    report = kql.check(_query(symbol))
    assert condition["metricMeasureColumn"] in report.defined
    for dimension in condition.get("dimensions", []):
        assert dimension["name"] in report.defined
        assert dimension["operator"] == "Include" and dimension["values"] == ["*"]
    assert condition["operator"] in {"GreaterThan", "LessThan"}
    assert condition["timeAggregation"] in {"Total", "Maximum"}


@pytest.mark.parametrize("symbol", sorted(_rules()))
def test_rule_query_avoids_what_log_search_alerts_refuse(symbol: str) -> None:
    # Azure Monitor does not take `search` or `union` in a log search alert (other than across
    # resources), and `take`/`limit` make results vary between evaluations.
    names = {token.text for token in kql.tokens(_query(symbol)) if token.kind == "name"}
    assert not names & {"search", "union", "take", "limit"}


@pytest.mark.parametrize("symbol", sorted(_rules()))
def test_rule_reads_as_far_back_as_its_query_looks(symbol: str) -> None:
    properties = _rules()[symbol]["properties"]
    window = _minutes(properties["windowSize"])
    assert _minutes(properties["evaluationFrequency"]) <= window
    reach = _minutes(properties.get("overrideQueryTimeRange", properties["windowSize"]))
    assert reach <= 2 * 1440, "a log search alert reads at most two days"
    unit = {"d": 1440, "h": 60, "m": 1}
    for amount, letter in _AGO.findall(_query(symbol)):
        assert int(amount) * unit[letter] <= reach, f"{symbol} looks back further than it reads"


@pytest.mark.parametrize("symbol", sorted(_rules()))
def test_rule_queries_application_insights_without_an_identity(symbol: str) -> None:
    config = ALERTS.resources[symbol]["config"]
    assert ALERTS.resources[symbol]["api_version"] == "2023-12-01"
    assert "identity" not in config, "an identity would need a role on the component"
    assert config["kind"] == "LogAlert"
    properties = config["properties"]
    (scope,) = properties["scopes"]
    component = ALERTS.symbol_of(scope)
    assert component and ALERTS.resources[component]["type"] == "Microsoft.Insights/components"
    assert ALERTS.resources[component]["existing"]
    assert properties["actions"] == "actions"
    assert properties["autoMitigate"] is True
    assert properties["severity"] in range(5)
    assert properties["description"] and properties["displayName"]


def test_monitoring_declares_no_identity_and_no_role() -> None:
    for path in MONITORING.glob("*.bicep"):
        template = Template(path)
        assert not template.resources_of_type("Microsoft.Authorization/roleAssignments"), path
        for symbol, resource in template.resources.items():
            assert "identity" not in resource["config"], f"{path.name}:{symbol}"


def test_the_action_group_exists_and_is_used_only_with_an_email_address() -> None:
    (body,) = ALERTS.resources_of_type("Microsoft.Insights/actionGroups").values()
    assert ALERTS.resources["actionGroup"]["config"]["condition"] == "notify"
    (receiver,) = body["properties"]["emailReceivers"]
    assert receiver["emailAddress"] == "alertEmailAddress"
    assert len(body["properties"]["groupShortName"]) <= 12
    quiet = ALERTS.evaluate("actions", _alerts_arguments())
    assert quiet == {"actionGroups": []}
    assert ALERTS.evaluate("notify", _alerts_arguments()) is False
    loud = ALERTS.evaluate("actions", _alerts_arguments(alertEmailAddress="ops@example.com"))
    (group,) = loud["actionGroups"]
    assert isinstance(group, Opaque) and "actionGroup" in group.expression


def test_alert_parameters_come_from_main_and_the_azd_environment() -> None:
    root = main()
    _, params = root.module("alerts")
    wired = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    alert_parameters = {name for name in root.parameters if name.startswith("alert")}
    assert len(alert_parameters) == 9
    passed = {
        root.resolve(value).name for value in params.values() if isinstance(root.resolve(value), ParamRef)
    }
    assert alert_parameters | {"detectSchedule", "operatingUnitNumbers"} <= passed
    for name in alert_parameters:
        assert re.fullmatch(r"\$\{ALERT_[A-Z_]+(=[^}]*)?\}", wired[name]["value"]), name
    assert root.parameters["alertEmailAddress"]["default"] == ""


@pytest.mark.parametrize(
    ("schedule", "override", "period", "stalled_after"),
    [
        ("0 */15 * * * *", 0, 15, 45),
        ("0 */5 * * * *", 0, 5, 15),
        ("0 */1 * * * *", 0, 1, 15),
        ("*/30 * * * * *", 0, 1, 15),
        ("0 0 * * * *", 0, 60, 180),
        ("0 30 */2 * * *", 0, 120, 360),
        ("0 0,20,40 * * * *", 0, 20, 60),
        ("0 0 6 * * *", 0, 1440, 2879),
        ("0 0 8-18 * * 1-5", 0, 1440, 2879),
        ("0 0 8-18 * * 1-5", 30, 30, 90),
    ],
)
def test_detection_stalls_after_three_periods_of_the_schedule(
    schedule: str, override: int, period: int, stalled_after: int
) -> None:
    arguments = _alerts_arguments(detectSchedule=schedule, alertDetectionPeriodMinutes=override)
    assert ALERTS.evaluate("periodMinutes", arguments) == period
    assert ALERTS.evaluate("stalledAfterMinutes", arguments) == stalled_after
    assert _condition("detectionStalled")["threshold"] == "stalledAfterMinutes"


def test_the_default_schedule_gives_the_default_period() -> None:
    assert main().parameters["detectSchedule"]["default"] == "0 */15 * * * *"
    assert ALERTS.evaluate("stalledAfterMinutes", _alerts_arguments()) == 45


def test_no_carts_rule_checks_each_configured_channel_in_business_hours() -> None:
    query = _query("noCartsInBusinessHours", operatingUnitNumbers="128, 0067", alertBusinessDays="1,2,3,4,5")
    assert 'let channels = dynamic(["128","0067"]);' in query  # leading zeros kept: an OUN is text
    assert "let businessDays = dynamic([1,2,3,4,5]);" in query
    assert "let noCartsHours = 4;" in query
    assert "let businessStartHour = 8;" in query and "let businessEndHour = 20;" in query
    rule = _rules()["noCartsInBusinessHours"]["properties"]
    assert ALERTS.evaluate(rule["enabled"], _alerts_arguments()) is True
    assert ALERTS.evaluate(rule["enabled"], _alerts_arguments(alertNoCartsHours=0)) is False
    # The window must fit the query time range: at most 23 hours in a one-day read.
    assert main().parameters["alertNoCartsHours"]["decorators"]
    assert _minutes(rule["overrideQueryTimeRange"]) >= 23 * 60


def test_customer_rule_compares_the_configured_rate_after_the_minimum_calls() -> None:
    assert "let minimumCalls = 5;" in _query("customerServerErrors")
    assert "let minimumCalls = 12;" in _query("customerServerErrors", alertCustomerMinimumCalls=12)
    assert _condition("customerServerErrors")["threshold"] == "customerServerErrorPercent"
    assert _condition("failedInvocations")["threshold"] == "failedInvocationsThreshold"


# ----- the workbook ------------------------------------------------------------------------------


def test_workbook_resource_belongs_to_application_insights() -> None:
    (body,) = WORKBOOK.resources_of_type("Microsoft.Insights/workbooks").values()
    assert body["kind"] == "shared"
    assert body["name"]["function"]["type"] == "guid"
    properties = body["properties"]
    assert properties["category"] == "workbook"
    component = WORKBOOK.symbol_of(properties["sourceId"])
    assert component and WORKBOOK.resources[component]["type"] == "Microsoft.Insights/components"
    assert WORKBOOK.resolve(properties["serializedData"]) is not None


def test_workbook_placeholders_are_all_filled_in() -> None:
    placeholders = set(re.findall(r"__[A-Z_]+__", WORKBOOK_JSON.read_text()))
    filled: set[str] = set()
    value: Any = WORKBOOK.variables["content"]["value"]
    while isinstance(value, dict) or (isinstance(value, str) and value in WORKBOOK.variables):
        if isinstance(value, str):
            value = WORKBOOK.variables[value]["value"]
            continue
        function = value["function"]
        assert function["type"] == "replace", function["type"]
        filled.add(function["parameters"]["old_string"])
        value = function["parameters"]["original_string"]
        if isinstance(value, dict) and value.get("function", {}).get("type") == "load_text_content":
            assert value["function"]["parameters"]["file_path"] == WORKBOOK_JSON.name
            break
    assert placeholders == filled == {"__APPLICATION_INSIGHTS_ID__", "__QUEUE_SERVICE_ID__"}


def test_workbook_items_query_the_component_over_the_chosen_time_range() -> None:
    workbook = _workbook()
    assert workbook["version"] == "Notebook/1.0"
    assert workbook["fallbackResourceIds"] == ["__APPLICATION_INSIGHTS_ID__"]
    parameters = {
        parameter["name"]
        for item in workbook["items"]
        if item["type"] == 9
        for parameter in item["content"]["parameters"]
    }
    names = [item["name"] for item in workbook["items"]]
    assert len(names) == len(set(names)), "item names must be unique"
    for item in workbook["items"]:
        content = item["content"]
        if item["type"] == 3:
            assert content["version"] == "KqlItem/1.0"
            assert content["queryType"] == 0
            assert content["resourceType"] == "microsoft.insights/components"
        if item["type"] in (3, 10):
            assert content["timeContextFromParameter"] in parameters
            assert content["title"]


def test_workbook_shows_what_the_issue_asks_for() -> None:
    queries = _workbook_queries()
    text = "\n".join(queries.values())
    for metric in (
        "connector.carts.found",
        "connector.carts.queued",
        "connector.carts.skipped",
        "connector.provider.duration",
        "connector.messages.poisoned",
        "connector.customers.created",
        "connector.detection.lag",
        "connector.recovery.settled",
        "connector.recovery.revenue",
        "connector.recovery.conversions",
    ):
        assert f'"{metric}"' in text, metric
    # Recovery: conversion per group and the lift with its interval, as the report computes them.
    assert "by group" in queries["recovery-conversion"]
    assert "liftPoints" in queries["recovery-lift"] and "ci95Points" in queries["recovery-lift"]
    # Mailed per channel: the notify outcome records carry the channel.
    assert "notify_outcome" in queries["emails-per-channel"]
    assert "customDimensions.oun" in queries["emails-per-channel"]
    latency = queries["customer-latency"]
    assert "percentile(durationMs, 50)" in latency and "percentile(durationMs, 95)" in latency
    (queue_chart,) = [item for item in _workbook()["items"] if item["type"] == 10]
    (metric,) = queue_chart["content"]["metrics"]
    assert metric["metric"].endswith("--QueueMessageCount")
    assert queue_chart["content"]["resourceIds"] == ["__QUEUE_SERVICE_ID__"]


def test_workbook_and_alerts_are_deployed_by_main() -> None:
    root = main()
    for symbol, path in (("workbook", "monitoring/workbook.bicep"), ("alerts", "monitoring/alerts.bicep")):
        assert root.modules[symbol]["detail"]["path"] == path
        assert (INFRA / Path(path)).is_file()


# ----- the troubleshooting guide -----------------------------------------------------------------

TROUBLESHOOTING = INFRA.parent / "docs" / "troubleshooting.md"


def _guide_queries() -> list[str]:
    return re.findall(r"```kql\n(.*?)```", TROUBLESHOOTING.read_text(), flags=re.DOTALL)


def test_the_guide_shows_a_query_for_each_symptom() -> None:
    sections = re.split(r"^## ", TROUBLESHOOTING.read_text(), flags=re.MULTILINE)[1:]
    assert len(sections) >= 10
    for section in sections:
        title = section.splitlines()[0]
        for part in ("**Symptom.**", "**Likely causes.**", "**Query.**", "**Fix.**"):
            assert part in section, f"{title}: no {part}"
        assert "```kql" in section, f"{title}: no query"


@pytest.mark.parametrize("index", range(len(_guide_queries())))
def test_guide_query_runs_against_the_component_and_the_contract(index: int) -> None:
    query = _guide_queries()[index]
    kql.check(query)
    metrics = set(re.findall(r'"(connector\.[a-z_.]+)"', query))
    events = set(re.findall(r'customDimensions\.event\) == "([a-z_]+)"', query))
    assert metrics <= set(CONTRACT_METRICS) and events <= set(CONTRACT_RECORDS)
    allowed = {"event"}.union(*(CONTRACT_METRICS[m] for m in metrics), *(CONTRACT_RECORDS[e] for e in events))
    assert set(re.findall(r"customDimensions\.([A-Za-z_][A-Za-z0-9_]*)", query)) <= allowed


@pytest.mark.parametrize("symbol", sorted(_rules()))
def test_every_alert_points_at_a_section_of_the_guide(symbol: str) -> None:
    text = TROUBLESHOOTING.read_text()
    headings = set(re.findall(r"^## (.+)$", text, flags=re.MULTILINE))
    properties = _rules()[symbol]["properties"]
    named = re.findall(r'"([^"]+)"', properties["description"])
    assert named and set(named) <= headings, f"{symbol} names {named}"
    assert f"| {properties['displayName']} |" in text, "the guide's alert table lists every rule"
