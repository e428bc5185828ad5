"""``hybridrec plan -f pools.yaml -f models.yaml`` over the samples."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from hybridrec_operator.cli.plan import load_objects, plan_all, plan_command

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def app() -> typer.Typer:
    application = typer.Typer()
    application.command("plan")(plan_command)

    @application.command("noop")
    def _noop() -> None:  # a second command keeps "plan" a subcommand, as under the real `hybridrec` app
        return None

    return application


def test_plan_prints_a_table_per_model() -> None:
    result = CliRunner().invoke(app(), ["plan", "-f", str(SAMPLES / "pools.yaml"), "-f", str(SAMPLES / "models.yaml")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("default/account-recs (restricted)", "default/homepage-recs (internal)", "default/trending (public)",
                 "onprem-a100", "onprem-t4", "cheapest allowed pool", "excluded: pool does not allow restricted data",
                 "0.90 USD", "0.70 USD", "total: 1.95 USD/h"):
        assert text in result.output, text


def test_plan_consumes_capacity_in_file_order() -> None:
    pools, models = load_objects([SAMPLES / "pools.yaml", SAMPLES / "models.yaml"])
    big = models[1].model_copy(update={"spec": models[1].spec.model_copy(update={"replicas": 5})})
    plans = dict((m.name, p) for m, p in plan_all(pools, [big, models[2]]))
    assert plans["homepage-recs"].replicas_by_pool() == {"onprem-t4": 4, "onprem-a100": 1}
    assert plans["trending"].replicas_by_pool() == {"onprem-a100": 1}


def test_plan_needs_pools_and_models(tmp_path: Path) -> None:
    result = CliRunner().invoke(app(), ["plan", "-f", str(SAMPLES / "pools.yaml")])
    assert result.exit_code == 2 and "need at least one" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text((SAMPLES / "pools.yaml").read_text().replace("maxGpus: 8", "maxGpus: -8"))
    result = CliRunner().invoke(app(), ["plan", "-f", str(bad), "-f", str(SAMPLES / "models.yaml")])
    assert result.exit_code == 2 and "invalid input" in result.output
