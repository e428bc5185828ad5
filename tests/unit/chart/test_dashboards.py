"""Grafana dashboards: committed JSON equals the generated JSON, and every query is valid PromQL over real metric names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from chart_helpers import CHART, known_metrics, run

from hybridrec_local import dashboards

DASHBOARD_DIR = CHART / "dashboards"
EVERYTHING = {"namespace": ".*", "model": ".*", "pool": ".*"}


KNOWN_METRICS = known_metrics()


def _loaded() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def test_committed_json_is_what_the_code_generates() -> None:
    assert dashboards.drift(DASHBOARD_DIR) == []
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(dashboards.render_all())


def test_drift_is_detected(tmp_path: Path) -> None:
    dashboards.write(tmp_path)
    (tmp_path / "placement.json").write_text("{}\n")
    assert dashboards.drift(tmp_path) == ["placement.json"]
    assert dashboards.main(["--check", str(tmp_path)]) == 1


def test_three_dashboards_with_stable_uids_and_variables() -> None:
    loaded = _loaded()
    assert set(loaded) == {"cost-overview", "performance", "placement"}
    for name, dash in loaded.items():
        assert dash["uid"] == f"hybridrec-{name}" and dash["schemaVersion"] >= 39
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for var in dashboards.TEMPLATE_VARIABLES:
            assert variables[var]["type"] == "query"
            assert variables[var]["query"].startswith("label_values(") and variables[var]["datasource"]["uid"] == "${datasource}"
            assert variables[var]["includeAll"] and variables[var]["allValue"] == ".*"


def test_every_panel_has_queries_and_uses_the_datasource_variable() -> None:
    for dash in _loaded().values():
        assert dash["panels"]
        for panel in dash["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
            assert panel.get("description"), f"{panel['title']} has no description"


def test_panels_do_not_overlap() -> None:
    for dash in _loaded().values():
        cells: set[tuple[int, int]] = set()
        for panel in dash["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24
            area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & area, panel["title"]
            cells |= area


def test_required_panels_exist() -> None:
    titles = {name: {p["title"] for p in dash["panels"]} for name, dash in _loaded().items()}
    assert {"Cost per hour by pool and tenancy", "Spend vs budget", "Projected month spend", "Cost per 1k recommendations", "ROI per model"} <= titles["cost-overview"]
    assert {"p95 latency vs SLO", "Requests per second", "Ready replicas by pool", "Batch size", "GPU utilisation"} <= titles["performance"]
    assert {"Replicas by tenancy and sensitivity", "Capacity shortfall", "Decisions timeline"} <= titles["placement"]


def test_queries_use_only_defined_metrics() -> None:
    for dash, title, expr in dashboards.all_panel_queries(cuda=True):
        names = dashboards.metric_names(expr)
        assert names, f"{dash}/{title}: no hybridrec metric in {expr}"
        assert names <= KNOWN_METRICS, f"{dash}/{title}: unknown metrics {names - KNOWN_METRICS}"


def test_all_panel_queries_matches_the_json_and_the_cuda_flag() -> None:
    in_json = {(name, p["title"], t["expr"]) for name, dash in _loaded().items() for p in dash["panels"] for t in p["targets"]}
    assert set(dashboards.all_panel_queries(cuda=True)) == in_json
    cpu = dashboards.all_panel_queries()
    assert len(cpu) == len(in_json) - 1
    assert all(not dashboards.metric_names(e) & dashboards.CUDA_ONLY_METRICS for *_, e in cpu)


def test_render_query_substitutes_every_variable() -> None:
    expr = 'rate(x{namespace=~"$namespace", pool=~"${pool}", model=~"${model:regex}"}[$__rate_interval])'
    assert dashboards.render_query(expr, EVERYTHING) == 'rate(x{namespace=~".*", pool=~".*", model=~".*"}[2m])'
    assert dashboards.render_query("[$__rate_interval]", {"__rate_interval": "15s"}) == "[15s]"
    with pytest.raises(KeyError):
        dashboards.render_query("$unknown", EVERYTHING)
    for *_, expr in dashboards.all_panel_queries(cuda=True):
        assert "$" not in dashboards.render_query(expr, EVERYTHING)


def test_queries_parse_with_promtool(promtool: str, tmp_path: Path) -> None:
    """Each rendered query as a recording rule: `promtool check rules` parses the PromQL without a server."""
    queries = dashboards.all_panel_queries(cuda=True)
    rules = [{"record": f"hybridrec:panel_query:{i}", "expr": dashboards.render_query(expr, EVERYTHING)} for i, (*_, expr) in enumerate(queries)]
    path = tmp_path / "panel-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = run([promtool, "check", "rules", str(path)]).stdout
    assert f"SUCCESS: {len(rules)} rules found" in out
    # And the check really parses: a broken expression fails.
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [{"record": "x:y", "expr": "sum by (pool (x)"}]}]}))
    assert run([promtool, "check", "rules", str(path)], check=False).returncode != 0


def test_docs_describe_every_panel() -> None:
    text = (CHART.parents[1] / "docs" / "dashboards.md").read_text()
    for dash in dashboards.DASHBOARDS:
        for panel in dash.panels:
            assert re.search(re.escape(panel.title), text), f"docs/dashboards.md does not describe {panel.title!r}"
