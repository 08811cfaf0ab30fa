"""The Grafana dashboard: its PromQL checked by the real promtool, its metrics by a real daemon."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrord.core.model import ArchKey
from mirrord.demo.repogen import simple_specs
from tests.daemon_harness import daemon_config, running_daemon, synced
from tests.helpers import REPO_ROOT, Mirror
from tests.prom import promtool, samples, scrape

DASHBOARD = REPO_ROOT / "config" / "grafana-mirrord.json"
KEY = ArchKey("v3.20", "main", "x86_64")

# What Grafana puts in place of each variable when "All" is selected (allValue ".*").
VALUES = {
    "job": "mirrord",
    "instance": ".*",
    "branch": ".*",
    "repo": ".*",
    "arch": ".*",
    "__rate_interval": "5m",
}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$", re.DOTALL)
METRIC = re.compile(r"mirrord_[a-z_]+")
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
# The services downstream and the releases trees: every metric of theirs has a panel.
DOWNSTREAM = ("mirrord_announce_", "mirrord_cdn_", "mirrord_bucket_", "mirrord_tree_")


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def template_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression, by where it is: panel targets, then query variables.

    For ``label_values(selector, label)`` the selector is the PromQL.
    """
    found: dict[str, str] = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found[f"panel {panel['id']} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = template_query(variable)
        match = LABEL_VALUES.match(query)
        found[f"variable {variable['name']}"] = match["selector"] if match else query
    return found


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in VALUES:
            pytest.fail(f"${name} in {expr!r} has no test value")
        return VALUES[name]

    return VARIABLE.sub(value, expr)


def test_every_panel_has_a_title_a_datasource_and_a_query() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["current"]["value"] == "mirrord"
    for name in ("instance", "branch", "arch"):
        assert template_query(variables[name]).startswith("label_values("), name
        assert variables[name]["allValue"] == ".*", name

    seen_ids: set[int] = set()
    for panel in panels(dashboard):
        assert panel["title"], panel
        assert panel["id"] not in seen_ids, panel["title"]
        seen_ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_selector_is_filtered_by_job() -> None:
    for where, expr in expressions(load()).items():
        if where == "variable job":
            continue  # it lists the jobs to choose from
        for match in METRIC.finditer(expr):
            rest = expr[match.end() :]
            assert rest.startswith("{"), f"{where}: {match[0]} has no label filter"
            assert 'job="$job"' in rest[: rest.index("}")], f"{where}: {match[0]} not by $job"


def test_the_promql_is_valid_for_promtool(tmp_path: Path) -> None:
    found = expressions(load())
    rules = [
        {
            "record": f"dashboard:expr_{n}:{re.sub(r'[^a-z0-9]+', '_', where.lower())}",
            "expr": substitute(e),
        }
        for n, (where, e) in enumerate(found.items())
    ]
    for rule in rules:
        assert "$" not in rule["expr"], rule
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout


def exposed_names(text: str) -> set[str]:
    """Series names a scrape of ``text`` can yield, including those without samples yet.

    Counters are announced with their ``_total`` name; a histogram's series are
    its ``_bucket``, ``_count`` and ``_sum``, never its bare name.
    """
    names = {name for name, _labels in samples(text)}
    for name, kind in TYPE_LINE.findall(text):
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(name)
    return names


async def test_every_metric_the_dashboard_uses_is_exposed_by_a_running_daemon(
    mirror: Mirror,
) -> None:
    mirror.tree.put(KEY, simple_specs("a", 3, payload=1000))
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        text = await scrape(f"http://{daemon.config.metrics.listen}")
    exposed = exposed_names(text)
    assert "mirrord_sync_duration_seconds_bucket" in exposed
    assert "mirrord_sync_duration_seconds" not in exposed

    used = {name for expr in expressions(load()).values() for name in METRIC.findall(expr)}
    assert "mirrord_mirror_lag_seconds" in used
    assert sorted(used - exposed) == []
    downstream = {n for n in exposed if n.startswith(DOWNSTREAM) and not n.endswith("_created")}
    assert len(downstream) >= 9, downstream
    assert sorted(downstream - used) == []
