"""The queries of the Grafana dashboards in deploy/grafana/dashboards/, with Grafana's variables
and macros expanded the way Grafana expands them for its Prometheus and PostgreSQL data
sources, so tests and benchmarks can run them against a real Prometheus and the real schema.

Grafana's PostgreSQL macros (public docs of the data source):
- ``$__timeFilter(col)`` → ``col BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC);
- ``$__timeFrom()`` / ``$__timeTo()`` → ``'<from>'`` / ``'<to>'``;
- ``$__timeGroupAlias(col, 1d)`` → ``floor(extract(epoch from col)/86400)*86400 AS "time"``.
Variable formats: ``${var:sqlstring}`` quotes each value for SQL ('' escapes a quote) and joins
them with commas; ``${var:regex}`` joins regex-escaped values as ``(a|b)`` (in PromQL); ``$var`` is the
value as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).parents[1] / "deploy" / "grafana" / "dashboards"
PROMETHEUS_TYPE = "prometheus"
POSTGRES_TYPE = "grafana-postgresql-datasource"

_INTERVAL_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    kind: str  # PROMETHEUS_TYPE or POSTGRES_TYPE
    text: str  # PromQL or SQL, unexpanded
    instant: bool = False


def load_dashboards() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries(name: str, board: dict) -> Iterator[Query]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            kind = (target.get("datasource") or panel["datasource"])["type"]
            text = target["expr"] if kind == PROMETHEUS_TYPE else target["rawSql"]
            yield Query(
                name, panel["title"], target["refId"], kind, text, target.get("instant", False)
            )


def variable_queries(name: str, board: dict) -> Iterator[tuple[dict, Query]]:
    """Query variables in dashboard order (later ones may use earlier ones)."""
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        kind = variable["datasource"]["type"]
        yield variable, Query(name, f"variable {variable['name']}", variable["name"], kind, text)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _variables(text: str, values: Mapping[str, Sequence[str]], kind: str) -> str:
    def formatted(match: re.Match) -> str:
        name = match.group("braced") or match.group("plain")
        form = match.group("format")
        if name not in values:
            raise KeyError(f"unknown variable ${name} in: {text}")
        chosen = list(values[name])
        if form == "sqlstring":
            return ",".join("'" + value.replace("'", "''") + "'" for value in chosen)
        if form == "regex":
            return "(" + "|".join(_promql_regex_escape(value) for value in chosen) + ")"
        if form is not None:
            raise KeyError(f"unsupported format :{form} in: {text}")
        if len(chosen) != 1:
            raise ValueError(f"${name} has {len(chosen)} values but no format, in: {text}")
        return chosen[0]

    pattern = r"\$\{(?P<braced>\w+)(?::(?P<format>\w+))?\}|\$(?P<plain>(?!__)\w+)"
    return re.sub(pattern, formatted, text)


def _promql_regex_escape(value: str) -> str:
    """As Grafana's Prometheus data source escapes a value for a regex inside a PromQL string:
    a regex metacharacter gets a backslash, itself escaped for the string literal."""
    return re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", value)


def expand_sql(
    text: str, values: Mapping[str, Sequence[str]], start: datetime, end: datetime
) -> str:
    def group_alias(match: re.Match) -> str:
        column, interval = match.group(1).strip(), match.group(2).strip()
        seconds = int(interval[:-1]) * _INTERVAL_SECONDS[interval[-1]]
        return f'floor(extract(epoch from {column})/{seconds})*{seconds} AS "time"'

    text = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", group_alias, text)
    text = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m.group(1).strip()} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'",
        text,
    )
    text = text.replace("$__timeFrom()", f"'{_rfc3339(start)}'")
    text = text.replace("$__timeTo()", f"'{_rfc3339(end)}'")
    return _checked(_variables(text, values, POSTGRES_TYPE))


def expand_promql(text: str, values: Mapping[str, Sequence[str]]) -> str:
    return _checked(_variables(text, values, PROMETHEUS_TYPE))


def _checked(text: str) -> str:
    if "$" in text:
        raise ValueError(f"unexpanded macro or variable left in: {text}")
    return text


def label_values_call(text: str) -> tuple[str, str] | None:
    """``label_values(selector, label)`` → (selector, label); None for other queries."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", text)
    return (match.group(1), match.group(2)) if match else None


def first_cells(rows: Sequence[Sequence[Any]]) -> list[str]:
    return [str(row[0]) for row in rows]
