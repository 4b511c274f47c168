"""The recovery report for people: the demo's printed table, and a self-contained HTML page with
charts (inline SVG, no script, nothing fetched) of conversion by group with its 95 % interval, the
lift against zero and the true lift, and revenue by day.

Both read only the JSON of ``GET /api/reports/recovery`` (counts, rates, amounts, channel and store
ids), so they hold no personal data, however the report was produced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from shared.recovery.report import Z_95

GROUPS = (("mailed", "Mailed"), ("holdout", "Held out"))
BASES = (("any", "any order"), ("strict", "with a cart product"))
_COLOURS = {"mailed": "#2b6cb0", "holdout": "#a0aec0", "expected": "#cbd5e0", "truth": "#c05621"}


@dataclass(frozen=True)
class Truth:
    """What the simulation built in: the rates the report should find."""

    baseline: float
    mailed: float

    @property
    def lift(self) -> float:
        return self.mailed - self.baseline


# ----- numbers as people read them


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f} %"


def points(value: float) -> str:
    return f"{value * 100:+.1f} pp"


def money(amount: str | Decimal | float) -> str:
    return f"{Decimal(str(amount)):,.2f}"


def wilson(successes: int, trials: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of one group's rate (sound for small counts, never below 0)."""
    if trials == 0:
        return None
    p = successes / trials
    z2 = Z_95 * Z_95
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z_95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def reading(report: dict[str, Any], truth: Truth | None) -> list[str]:
    """What the lift says, in words."""
    lift = report["lift"]["any"]
    if lift is None:
        return ["no lift yet: the range has no mailed or no held-out carts"]
    low, high = lift["absoluteCi95"]["low"], lift["absoluteCi95"]["high"]
    lines: list[str] = []
    if truth is not None:
        inside = "lies inside" if low <= truth.lift <= high else "lies OUTSIDE"
        lines.append(f"the true lift ({points(truth.lift)}) {inside} the report's 95 % interval")
    if low > 0:
        lines.append("the interval lies above 0: the reminders bring customers back")
    elif high < 0:
        lines.append("the interval lies below 0: fewer mailed customers ordered than held-out ones")
    else:
        lines.append(
            "the interval includes 0: too few carts yet to tell what the reminders do "
            "(more carts, or a larger holdout, narrow it)"
        )
    return lines


# ----- the printed table


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def _group_row(group: dict[str, Any], label: str) -> list[str]:
    """A group's row, the same in the printed table and on the page."""
    median = group["medianHoursToConvert"]
    return [
        label,
        str(group["carts"]),
        str(group["converted"]["any"]),
        percent(group["conversionRate"]["any"]),
        str(group["converted"]["strict"]),
        percent(group["conversionRate"]["strict"]),
        "-" if median is None else f"{median:.1f}",
    ]


def _channel_row(channel: dict[str, Any]) -> list[str]:
    return [
        f"{channel['channel']} {channel['storeId'] or ''}".strip(),
        str(channel["mailedConversions"]),
        str(channel["holdoutConversions"]),
        ", ".join(f"{a['currency']} {money(a['amount'])}" for a in channel["revenue"]),
    ]


def report_table(report: dict[str, Any], truth: Truth | None = None) -> list[str]:
    groups = report["groups"]
    rows: list[list[str]] = [
        ["group", "carts", "orders (any)", "rate", "orders (strict)", "rate", "median h"]
    ]
    rows += [_group_row(groups[name], label.lower()) for name, label in GROUPS]
    lines = _table(rows)
    lines.append("")
    for basis, _ in BASES:
        lift = report["lift"][basis]
        if lift is None:
            lines.append(f"  lift ({basis}): n/a (no held-out or no mailed carts)")
            continue
        ci = lift["absoluteCi95"]
        relative = "" if lift["relative"] is None else f", relative {lift['relative'] * 100:+.0f} %"
        lines.append(
            f"  lift ({basis}): {points(lift['absolute'])}, 95 % interval "
            f"{points(ci['low'])} .. {points(ci['high'])}{relative}"
        )
    lines.append("")
    revenue_rows = [["revenue", "mailed", "of it strict", "held out", "incremental", "95 % interval"]]
    for row in report["revenue"]:
        interval = row["incrementalRevenueCi95"]
        revenue_rows.append(
            [
                row["currency"],
                money(row["mailedRevenue"]),
                money(row["mailedRevenueStrict"]),
                money(row["holdoutRevenue"]),
                "n/a" if row["incrementalRevenue"] is None else money(row["incrementalRevenue"]),
                "n/a" if interval is None else f"{money(interval[0])} .. {money(interval[1])}",
            ]
        )
    if len(revenue_rows) > 1:
        lines += _table(revenue_rows)
        lines.append("")
    channel_rows = [["orders by channel", "mailed", "held out", "revenue"]]
    channel_rows += [_channel_row(channel) for channel in report["byChannel"]]
    if len(channel_rows) > 1:
        lines += _table(channel_rows)
    for step in report["byStep"]:
        amounts = ", ".join(f"{a['currency']} {money(a['amount'])}" for a in step["revenue"])
        lines.append(f"  after reminder {step['step']}: {step['conversions']} orders, {amounts}")
    if not report["complete"]:
        lines += [f"  incomplete: {reason}" for reason in report["incompleteReasons"]]
    lines += [f"  reading: {line}" for line in reading(report, truth)]
    return lines


# ----- SVG


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}" class="chart">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a
    power of ten), so five gridlines fall on round numbers."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    steps = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
    return next(round(step * power, 12) for step in steps if step * power >= value)


def _text(
    x: float, y: float, text: str, *, anchor: str = "middle", size: int = 12, fill: str = "#2d3748"
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}">'
        f"{escape(text)}</text>"
    )


def _value_axis(
    highest: float, *, width: int, left: int, top: int, plot_h: int, label: Callable[[float], str]
) -> tuple[Callable[[float], float], list[str]]:
    """A vertical axis from 0 to a round maximum above ``highest``: the value-to-y mapping, and its
    six gridlines with their labels."""
    top_value = _nice_max(highest * 1.1)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    grid: list[str] = []
    for i in range(6):
        value = top_value * i / 5
        grid.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e2e8f0"/>'
        )
        grid.append(_text(left - 6, y(value) + 4, label(value), anchor="end", size=11))
    return y, grid


def conversion_chart(report: dict[str, Any], truth: Truth | None) -> str:
    """Conversion rate per group, any order and with a cart product, with 95 % Wilson intervals;
    the true rates as dashed marks."""
    width, height, left, top, bottom = 560, 300, 56, 24, 52
    plot_h = height - top - bottom
    groups = report["groups"]
    intervals = {
        (name, basis): wilson(groups[name]["converted"][basis], groups[name]["carts"])
        for name, _ in GROUPS
        for basis, _ in BASES
    }
    highest = max(
        [ci[1] for ci in intervals.values() if ci is not None] + ([truth.mailed] if truth else []),
        default=0.0,
    )
    y, body = _value_axis(
        highest, width=width, left=left, top=top, plot_h=plot_h, label=lambda value: percent(value, 0)
    )
    slot = (width - left - 10) / len(BASES)
    bar = slot / 4
    for b, (basis, label) in enumerate(BASES):
        for g, (name, group_label) in enumerate(GROUPS):
            rate = groups[name]["conversionRate"][basis]
            x = left + b * slot + slot / 2 - bar + g * bar + 4 * (g - 0.5)
            if rate is not None:
                body.append(
                    f'<rect x="{x:.1f}" y="{y(rate):.1f}" width="{bar - 4:.1f}" '
                    f'height="{y(0) - y(rate):.1f}" fill="{_COLOURS[name]}">'
                    f"<title>{escape(group_label)}, {escape(label)}: {percent(rate)}</title></rect>"
                )
            ci = intervals[(name, basis)]
            if rate is not None:
                label_y = y(ci[1] if ci is not None else rate) - 6
                body.append(_text(x + (bar - 4) / 2, label_y, percent(rate), size=11))
            if ci is not None:
                cx = x + (bar - 4) / 2
                low, high = y(ci[0]), y(ci[1])
                body.append(
                    f'<path d="M{cx:.1f} {low:.1f}V{high:.1f}M{cx - 6:.1f} {low:.1f}H{cx + 6:.1f}'
                    f'M{cx - 6:.1f} {high:.1f}H{cx + 6:.1f}" stroke="#1a202c" stroke-width="1.5" fill="none">'
                    f"<title>95 % interval {percent(ci[0])} .. {percent(ci[1])}</title></path>"
                )
            if truth is not None and basis == "any":
                true_rate = truth.mailed if name == "mailed" else truth.baseline
                mark = y(true_rate)
                body.append(
                    f'<line x1="{x - 3:.1f}" x2="{x + bar - 1:.1f}" y1="{mark:.1f}" y2="{mark:.1f}" '
                    f'stroke="{_COLOURS["truth"]}" stroke-width="2" stroke-dasharray="4 3">'
                    f"<title>true rate {percent(true_rate)}</title></line>"
                )
            body.append(_text(x + (bar - 4) / 2, y(0) + 16, group_label, size=11))
        body.append(_text(left + b * slot + slot / 2, height - 14, f"orders: {label}", size=12))
    body.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#4a5568"/>')
    return _svg(width, height, body, "Conversion rate by group with 95 % intervals")


def lift_chart(report: dict[str, Any], truth: Truth | None) -> str:
    """The absolute lift and its 95 % interval per basis, against 0 and the true lift."""
    width, height, left, right = 560, 150, 170, 36
    rows = [(basis, label, report["lift"][basis]) for basis, label in BASES]
    values = [0.0] + ([truth.lift] if truth else [])
    for _, _, lift in rows:
        if lift is not None:
            values += [lift["absoluteCi95"]["low"], lift["absoluteCi95"]["high"]]
    span = _nice_max(max(abs(v) for v in values) * 1.1)

    def x(value: float) -> float:
        return left + (width - left - right) * (value + span) / (2 * span)

    body: list[str] = []
    for i in range(-2, 3):
        value = span * i / 2
        body.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="16" y2="{height - 34}" stroke="#e2e8f0"/>'
        )
        body.append(_text(x(value), height - 18, points(value), size=11))
    body.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="16" y2="{height - 34}" stroke="#4a5568"/>')
    if truth is not None:
        body.append(
            f'<line x1="{x(truth.lift):.1f}" x2="{x(truth.lift):.1f}" y1="16" y2="{height - 34}" '
            f'stroke="{_COLOURS["truth"]}" stroke-width="2" stroke-dasharray="4 3">'
            f"<title>true lift {points(truth.lift)}</title></line>"
        )
    for i, (_, label, lift) in enumerate(rows):
        cy = 40 + i * 40
        body.append(_text(left - 10, cy + 4, label, anchor="end"))
        if lift is None:
            body.append(_text(x(0) + 8, cy + 4, "n/a", anchor="start"))
            continue
        low, high = lift["absoluteCi95"]["low"], lift["absoluteCi95"]["high"]
        body.append(
            f'<path d="M{x(low):.1f} {cy}H{x(high):.1f}'
            f'M{x(low):.1f} {cy - 7}V{cy + 7}M{x(high):.1f} {cy - 7}V{cy + 7}" '
            f'stroke="{_COLOURS["mailed"]}" stroke-width="2" fill="none">'
            f"<title>95 % interval {points(low)} .. {points(high)}</title></path>"
        )
        body.append(
            f'<circle cx="{x(lift["absolute"]):.1f}" cy="{cy}" r="5" fill="{_COLOURS["mailed"]}">'
            f"<title>lift {points(lift['absolute'])}</title></circle>"
        )
    return _svg(width, height, body, "Lift (mailed minus held out) with 95 % intervals")


def revenue_chart(daily: Sequence[tuple[datetime, dict[str, Any]]], currency: str) -> str:
    """Per day of the first reminder: what the mailed carts bought, and what as many carts would
    have bought at the held-out group's revenue per cart (the difference is what the emails earned)."""
    width, height, left, top, bottom = 560, 260, 72, 20, 48
    plot_h = height - top - bottom
    bars: list[tuple[str, float, float | None]] = []
    for day, report in daily:
        row = next((r for r in report["revenue"] if r["currency"] == currency), None)
        mailed = float(row["mailedRevenue"]) if row else 0.0
        expected: float | None = None
        if row and row["holdoutCarts"]:
            expected = float(row["holdoutRevenue"]) / row["holdoutCarts"] * row["mailedCarts"]
        bars.append((day.strftime("%a %d %b"), mailed, expected))
    highest = max([m for _, m, _ in bars] + [e or 0.0 for _, _, e in bars])
    y, body = _value_axis(
        highest, width=width, left=left, top=top, plot_h=plot_h, label=lambda value: f"{value:,.0f}"
    )
    slot = (width - left - 10) / max(1, len(bars))
    bar = min(48.0, slot / 3)
    for i, (label, mailed, expected) in enumerate(bars):
        x = left + i * slot + slot / 2 - bar
        body.append(
            f'<rect x="{x:.1f}" y="{y(mailed):.1f}" width="{bar - 2:.1f}" height="{y(0) - y(mailed):.1f}" '
            f'fill="{_COLOURS["mailed"]}"><title>{escape(label)}: mailed carts bought '
            f"{currency} {money(mailed)}</title></rect>"
        )
        if expected is not None:
            body.append(
                f'<rect x="{x + bar:.1f}" y="{y(expected):.1f}" width="{bar - 2:.1f}" '
                f'height="{y(0) - y(expected):.1f}" fill="{_COLOURS["expected"]}"><title>{escape(label)}: '
                f"as many carts at the held-out revenue per cart: {currency} {money(expected)}</title></rect>"
            )
        body.append(_text(x + bar, y(0) + 16, label, size=11))
    body.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#4a5568"/>')
    body.append(_text(width - 10, top - 6, currency, anchor="end", size=12))
    return _svg(width, height, body, f"Revenue by day of the first reminder, {currency}")


# ----- the page


def _instant(text: str) -> str:
    """``2026-11-21T00:00:00Z`` as ``2026-11-21 00:00 UTC``."""
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 else text


def _channels(oun: str | None) -> str:
    return "every channel" if oun is None else f"channel {oun}"


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<p class="legend">'
        + "".join(f'<span><i style="background:{colour}"></i>{escape(text)}</span>' for colour, text in items)
        + "</p>"
    )


_STYLE = " ".join(
    [
        'body{font-family:system-ui,"Segoe UI",sans-serif;margin:2rem auto;max-width:880px;',
        "color:#1a202c;padding:0 1rem}",
        "h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem}",
        "table{border-collapse:collapse;margin:.5rem 0}",
        "td,th{padding:.25rem .75rem;border-bottom:1px solid #e2e8f0;text-align:right}",
        "td:first-child,th:first-child{text-align:left} .note{color:#4a5568;font-size:.9rem}",
        ".legend span{margin-right:1.25rem;font-size:.9rem}",
        ".legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.35rem;vertical-align:-1px}",
        ".chart{max-width:100%;height:auto}",
    ]
)


def report_html(
    report: dict[str, Any],
    daily: Sequence[tuple[datetime, dict[str, Any]]],
    *,
    truth: Truth | None = None,
    context: Sequence[str] = (),
) -> str:
    groups = report["groups"]
    group_rows = [_group_row(groups[name], label) for name, label in GROUPS]
    lift_rows = [
        [
            label,
            points(lift["absolute"]),
            f"{points(lift['absoluteCi95']['low'])} .. {points(lift['absoluteCi95']['high'])}",
            "n/a" if lift["relative"] is None else f"{lift['relative'] * 100:+.0f} %",
        ]
        for (basis, label) in BASES
        if (lift := report["lift"][basis]) is not None
    ]
    revenue_rows = [
        [
            row["currency"],
            money(row["mailedRevenue"]),
            money(row["holdoutRevenue"]),
            "n/a" if row["incrementalRevenue"] is None else money(row["incrementalRevenue"]),
            "n/a"
            if row["incrementalRevenueCi95"] is None
            else f"{money(row['incrementalRevenueCi95'][0])} .. {money(row['incrementalRevenueCi95'][1])}",
        ]
        for row in report["revenue"]
    ]
    channel_rows = [_channel_row(channel) for channel in report["byChannel"]]
    currencies = [row["currency"] for row in report["revenue"]]
    truth_legend = [(_COLOURS["truth"], "true value built into the simulation (dashed)")] if truth else []
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Recovery report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Recovery report: what the reminders brought back</h1>",
        f'<p class="note">Carts first reminded (or held out) from {escape(_instant(report["from"]))} up to '
        f"{escape(_instant(report['to']))}, {escape(_channels(report['oun']))}, orders counted for "
        f"{report['attributionDays']} days, {report['holdoutPercent']} % of customers held out.</p>",
        *(f'<p class="note">{escape(line)}</p>' for line in context),
        *(
            f'<p class="note"><strong>Incomplete:</strong> {escape(r)}</p>'
            for r in report["incompleteReasons"]
        ),
        "<h2>Conversion by group</h2>",
        _legend([(_COLOURS["mailed"], "mailed"), (_COLOURS["holdout"], "held out"), *truth_legend]),
        conversion_chart(report, truth),
        '<p class="note">Bars: share of carts whose customer ordered within the window; whiskers: '
        "95 % interval of each rate (Wilson).</p>",
        _html_table(
            ["group", "carts", "orders (any)", "rate", "orders (strict)", "rate", "median hours"], group_rows
        ),
        "<h2>Lift</h2>",
        lift_chart(report, truth),
        '<p class="note">Dots: the lift, mailed rate minus held-out rate, in percentage points; lines: its '
        "95 % interval; the grey line is no effect at all.</p>",
        _html_table(["basis", "absolute lift", "95 % interval", "relative lift"], lift_rows),
        "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in reading(report, truth)) + "</ul>",
        "<h2>Revenue</h2>",
        _html_table(["currency", "mailed", "held out", "incremental", "95 % interval"], revenue_rows),
    ]
    if daily:
        parts += [
            "<h2>Revenue by day of the first reminder</h2>",
            _legend(
                [
                    (_COLOURS["mailed"], "what the mailed carts bought"),
                    (_COLOURS["expected"], "as many carts at the held-out group's revenue per cart"),
                ]
            ),
            *(revenue_chart(daily, currency) for currency in currencies),
            '<p class="note">The gap between the two bars of a day is what that day\'s emails earned; '
            "one day's figures are far noisier than the totals above.</p>",
        ]
    parts += [
        "<h2>Orders by channel</h2>",
        _html_table(["channel", "mailed", "held out", "revenue"], channel_rows),
        '<p class="note">From <code>GET /api/reports/recovery</code>: counts, rates, amounts and store '
        "ids only, no customer data.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
