"""Alert rules: valid for promtool, unit-tested with a firing and a not-firing case each, on real metric names."""

from __future__ import annotations

from pathlib import Path

import yaml
from chart_helpers import CHART, known_metrics, run

from hybridrec_local.dashboards import metric_names

KNOWN_METRICS = known_metrics()

RULES = CHART / "rules" / "hybridrec-alerts.yaml"
TESTS = Path(__file__).with_name("alerts-test.yaml")
EXPECTED = {
    "HybridRecBudgetProjectedOverrun", "HybridRecBudgetExceeded", "HybridRecSLOAtRisk",
    "HybridRecSensitiveCapacityShortfall", "HybridRecReconcileErrors", "HybridRecControllerDataStale",
    "HybridRecSensitivePlacementViolation", "HybridRecAdmissionPolicyMissing",
}


def _alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_check_rules(promtool: str) -> None:
    out = run([promtool, "check", "rules", str(RULES)]).stdout
    assert f"SUCCESS: {len(EXPECTED)} rules found" in out


def test_promtool_unit_tests_pass(promtool: str) -> None:
    proc = run([promtool, "test", "rules", str(TESTS)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A wrong expectation makes promtool fail, so the passing run above means something."""
    suite = yaml.safe_load(TESTS.read_text())
    suite["rule_files"] = [str(RULES)]
    suite["tests"][0]["alert_rule_test"][0]["exp_alerts"] = suite["tests"][0]["alert_rule_test"][1]["exp_alerts"]
    broken = tmp_path / "broken-test.yaml"
    broken.write_text(yaml.safe_dump(suite))
    assert run([promtool, "test", "rules", str(broken)], check=False).returncode != 0


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    suite = yaml.safe_load(TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in suite["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == quiet == EXPECTED


def test_alerts_are_labelled_annotated_and_use_known_metrics() -> None:
    alerts = _alerts()
    assert {a["alert"] for a in alerts} == EXPECTED
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description", "runbook"} <= set(alert["annotations"])
        assert "$labels" in alert["annotations"]["summary"] and "$labels" in alert["annotations"]["description"]
        assert alert.get("for"), f"{alert['alert']} fires on a single evaluation"
        names = metric_names(alert["expr"])
        assert names and names <= KNOWN_METRICS, f"{alert['alert']}: {names - KNOWN_METRICS}"
