"""A small reader for the KQL the alerts and the workbook run against Application Insights.

No KQL parser installs from PyPI without .NET, so this checks what breaks a query most often,
short of running it: brackets and strings that do not close, a table that does not exist where the
rules run, and a name that is neither a column of the tables the query reads, nor something the
query defines (``let x =``, ``extend x =``, ``summarize x = ... by y =``), nor KQL's own vocabulary.

The rules and the workbook query the Application Insights resource, so the tables are the classic
ones (``traces``, ``customMetrics``, ``requests``, ...), which a workspace-based resource still
serves under their classic column names. The workspace's own names (``AppTraces``, ``AppMetrics``,
...) are refused: inside the component's scope they do not exist. Columns per table are those of
Microsoft's "Migrate to workspace-based Application Insights resources" mapping (classic names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COMMON_COLUMNS = frozenset(
    {
        "appId",
        "application_Version",
        "appName",
        "client_Browser",
        "client_City",
        "client_CountryOrRegion",
        "client_IP",
        "client_Model",
        "client_OS",
        "client_StateOrProvince",
        "client_Type",
        "cloud_RoleInstance",
        "cloud_RoleName",
        "customDimensions",
        "iKey",
        "itemId",
        "itemType",
        "operation_Id",
        "operation_Name",
        "operation_ParentId",
        "operation_SyntheticSource",
        "sdkVersion",
        "session_Id",
        "timestamp",
        "user_AccountId",
        "user_AuthenticatedId",
        "user_Id",
    }
)

# The classic tables a component-scoped query may read, with their columns.
TABLES: dict[str, frozenset[str]] = {
    "traces": _COMMON_COLUMNS | {"customMeasurements", "itemCount", "message", "severityLevel"},
    "customMetrics": _COMMON_COLUMNS | {"name", "value", "valueCount", "valueMax", "valueMin", "valueSum"},
    "requests": _COMMON_COLUMNS
    | {
        "customMeasurements",
        "duration",
        "id",
        "itemCount",
        "name",
        "performanceBucket",
        "resultCode",
        "source",
        "success",
        "url",
    },
    "dependencies": _COMMON_COLUMNS
    | {
        "customMeasurements",
        "data",
        "duration",
        "id",
        "itemCount",
        "name",
        "performanceBucket",
        "resultCode",
        "success",
        "target",
        "type",
    },
    "exceptions": _COMMON_COLUMNS
    | {
        "assembly",
        "customMeasurements",
        "details",
        "handledAt",
        "innermostAssembly",
        "innermostMessage",
        "innermostMethod",
        "innermostType",
        "itemCount",
        "message",
        "method",
        "outerAssembly",
        "outerMessage",
        "outerMethod",
        "outerType",
        "problemId",
        "severityLevel",
        "type",
    },
}

# The same data under the Log Analytics workspace's names: valid there, not in the component.
WORKSPACE_TABLES = frozenset(
    {
        "AppTraces",
        "AppMetrics",
        "AppRequests",
        "AppDependencies",
        "AppExceptions",
        "AppEvents",
        "AppPageViews",
        "AppAvailabilityResults",
        "AppBrowserTimings",
        "AppPerformanceCounters",
        "AppSystemEvents",
        "FunctionAppLogs",
    }
)

# Query operators, clause words, literals, chart kinds, join kinds and scalar types: the words a
# query uses that are no column. (Functions are recognised by the "(" that follows them.)
KEYWORDS = frozenset(
    {
        "and",
        "anti",
        "as",
        "asc",
        "between",
        "by",
        "contains",
        "count",
        "desc",
        "distinct",
        "endswith",
        "extend",
        "false",
        "first",
        "fullouter",
        "has",
        "in",
        "inner",
        "innerunique",
        "join",
        "kind",
        "last",
        "leftanti",
        "leftouter",
        "leftsemi",
        "let",
        "limit",
        "lookup",
        "matches",
        "mv-expand",
        "not",
        "null",
        "nulls",
        "on",
        "or",
        "order",
        "print",
        "project",
        "project-away",
        "project-rename",
        "regex",
        "render",
        "rightanti",
        "rightouter",
        "rightsemi",
        "sort",
        "startswith",
        "summarize",
        "take",
        "to",
        "top",
        "true",
        "union",
        "where",
        "with",
        # render kinds
        "areachart",
        "barchart",
        "columnchart",
        "linechart",
        "piechart",
        "table",
        "timechart",
        # scalar types (typeof(string), to typeof(long))
        "bool",
        "datetime",
        "decimal",
        "double",
        "dynamic",
        "guid",
        "int",
        "long",
        "real",
        "string",
        "timespan",
        # join sides
        "$left",
        "$right",
    }
)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>//[^\n]*)
  | (?P<verbatim>@"[^"]*"|@'[^']*')
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?[a-zA-Z]*)
  | (?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>==|!=|=~|!~|<=|>=|\.\.|[|()\[\]{},;=<>+\-*/%.!:~])
    """,
    re.VERBOSE,
)

_OPEN = {"(": ")", "[": "]", "{": "}"}


class KqlError(AssertionError):
    pass


@dataclass
class Token:
    kind: str
    text: str
    offset: int


@dataclass
class Report:
    """What a query reads and defines."""

    tables: set[str] = field(default_factory=set)
    lets: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)


def tokens(query: str) -> list[Token]:
    found: list[Token] = []
    position = 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None:
            snippet = query[position : position + 20]
            if snippet[:1] in "\"'":
                raise KqlError(f"a string does not close at offset {position}: {snippet!r}")
            raise KqlError(f"cannot read the query at offset {position}: {snippet!r}")
        kind = match.lastgroup
        assert kind is not None
        text = match.group()
        if kind == "name" and found and found[-1].text == "|":
            # Operators with dashes (mv-expand, project-away) follow a pipe.
            dashed = re.compile(r"(?:-[A-Za-z_][A-Za-z0-9_]*)+").match(query, match.end())
            if dashed:
                text += dashed.group()
                position = dashed.end()
                found.append(Token("name", text, match.start()))
                continue
        if kind not in ("space", "comment"):
            found.append(Token(kind, text, match.start()))
        position = match.end()
    return found


def _check_brackets(items: list[Token]) -> None:
    stack: list[Token] = []
    for token in items:
        if token.text in _OPEN:
            stack.append(token)
        elif token.text in _OPEN.values():
            if not stack or _OPEN[stack[-1].text] != token.text:
                raise KqlError(f"unbalanced {token.text!r} at offset {token.offset}")
            stack.pop()
    if stack:
        raise KqlError(f"{stack[-1].text!r} at offset {stack[-1].offset} is never closed")


def _collect_definitions(items: list[Token], report: Report) -> None:
    for index, token in enumerate(items):
        if token.kind != "name":
            continue
        after = items[index + 1].text if index + 1 < len(items) else ""
        before = items[index - 1].text if index else ""
        if before == "let":
            report.lets.add(token.text)
        elif after == "=" and before != ".":
            report.defined.add(token.text)


def _check_sources(items: list[Token], report: Report) -> None:
    """The name a tabular expression starts from must be a table or a ``let``."""
    expect_source = True
    union_depth: int | None = None
    depth = 0
    statement_is_let = False
    for index, token in enumerate(items):
        text = token.text
        after = items[index + 1].text if index + 1 < len(items) else ""
        if text == ";":
            expect_source, union_depth, statement_is_let = True, None, False
            continue
        if text == "let" and expect_source:
            statement_is_let, expect_source = True, False
            continue
        if text == "=" and statement_is_let:
            # The first "=" of a let: its value may be a tabular expression.
            expect_source, statement_is_let = True, False
            continue
        if text == "(":
            depth += 1
            continue
        if text == ")":
            depth -= 1
            continue
        if text == "union":
            union_depth, expect_source = depth, True
            continue
        if text == "," and union_depth is not None and depth == union_depth:
            expect_source = True
            continue
        if text == "|" and union_depth is not None and depth == union_depth:
            union_depth = None
        if (
            expect_source
            and token.kind == "name"
            and text != "print"
            and after != "("
            and text not in TABLES
            and text not in report.lets
        ):
            raise KqlError(f"{text!r} at offset {token.offset} is neither a table nor a let")
        expect_source = False


def check(query: str, *, known: frozenset[str] = frozenset()) -> Report:
    """Raise ``KqlError`` for what would make Application Insights refuse ``query``.

    ``known`` are names the query may use without defining them (none, for a complete query).
    """
    items = tokens(query)
    if not items:
        raise KqlError("the query is empty")
    _check_brackets(items)
    report = Report()
    _collect_definitions(items, report)
    for token in items:
        if token.kind == "name" and token.text in WORKSPACE_TABLES:
            raise KqlError(f"{token.text} is the workspace's name; in the component it is a classic table")
        if token.kind == "name" and token.text in TABLES:
            report.tables.add(token.text)
    _check_sources(items, report)
    columns = set().union(*(TABLES[table] for table in report.tables)) if report.tables else set()
    for index, token in enumerate(items):
        if token.kind != "name":
            continue
        before = items[index - 1].text if index else ""
        after = items[index + 1].text if index + 1 < len(items) else ""
        if before == "." or after == "(":
            continue  # a property of a dynamic value, or a function
        name = token.text
        if (
            name in KEYWORDS
            or name in TABLES
            or name in report.lets
            or name in report.defined
            or name in known
            or name in columns
        ):
            continue
        raise KqlError(
            f"{name!r} at offset {token.offset} is no column of {sorted(report.tables)} and is not defined"
        )
    return report
