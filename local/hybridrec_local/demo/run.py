"""The demo's orchestration: the steps in order, the day of traffic with its live view, the report, and the clean-up
guarantee (on any failure, Ctrl-C or SIGTERM everything started is stopped; :func:`demo_down` does it from another
shell).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hybridrec_local.demo import retraining as rt
from hybridrec_local.demo.errors import DemoError, Terminated
from hybridrec_local.demo.files import DEFAULT_OUTPUT, DEFAULT_WORKDIR, MODELS_FILE, POOLS_FILE, SCENARIO_FILE
from hybridrec_local.demo.live import render_live, status_line
from hybridrec_local.demo.manifests import Artifact, docs, model_infos, pool_infos, render_models, render_pools, sale_event
from hybridrec_local.demo.observe import (
    MANAGED_SELECTOR,
    PROM_COST,
    PROM_P95,
    build_sample,
    load_snapshot,
    new_decisions,
    prom_vector,
)
from hybridrec_local.demo.scenario import load_scenario, offered_rps
from hybridrec_local.demo.stack import ARTIFACT_BUCKET, DemoStack
from hybridrec_local.demo.steps import Steps
from hybridrec_local.demo.training import Training
from hybridrec_local.loadgen import OpenLoopLoad, Stream, read_servers
from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.report_retraining import RetrainingRecord
from hybridrec_local.summary import clock, summary_lines
from hybridrec_local.timeline import FlashSale, Timeline

EXPLAIN = {
    "cluster": (
        "A real Kubernetes control plane is running on 127.0.0.1 (etcd, kube-apiserver, scheduler, controllers) with "
        "9 fake GPU nodes (kwok) in 4 pools: onprem-a100 and onprem-t4 are [cyan]private[/cyan] (reserved, cheap, "
        "limited), aws-spot-l4 and gcp-ondemand-a100 are [orange3]public[/orange3] cloud (elastic, pricier, tainted "
        "so only workloads allowed there land on them)."
    ),
    "models": (
        "Three models, three data classes:\n"
        "  [red]account-recs[/red] is [red]restricted[/red] (built from account data): it may only run on private "
        "pools that list `restricted` (onprem-a100). No price or load changes that: the operator never places it "
        "elsewhere, and the admission policy would refuse such a pod at the API server anyway.\n"
        "  [yellow]homepage-recs[/yellow] is [yellow]internal[/yellow] with allowPublicBurst: private pools first, "
        "public spot capacity only when the private pools are full.\n"
        "  [green]trending[/green] is [green]public[/green]: it goes wherever it is cheapest."
    ),
    "sale": (
        "The flash sale is declared in homepage-recs' spec.scaling.schedule ({window}, x{mult:g}). The cost "
        "controller (every {interval:g} s) forecasts demand from Prometheus, multiplies in the declared event and "
        "provisions ahead by the pools' start-up time, so the extra replicas are serving when the sale starts. When "
        "private capacity runs out, homepage-recs bursts to aws-spot-l4 (public spot: the cheapest public GPU), "
        "while account-recs stays private."
    ),
    "retraining": (
        "Retraining: as the models are deployed, the demo asks for one retraining of "
        "[green]trending[/green] (a RecModelTrainingRun; its nightly schedule is suspended so only this run trains). "
        "The operator places the run's Job on a pool its [green]public[/green] data may use, cheapest first; the pod "
        "runner runs the trainer for real on MovieLens 100K ({epochs} epochs; the serving version had {serving}); the "
        "operator gates the new version against the serving one and the popularity baseline (HR@10) and, if it is "
        "better, rolls it out make-before-break. The report shows the run, its measured cost and its promotion."
    ),
}


@dataclass
class DemoOptions:
    """What ``hybridrec demo run`` was asked to do."""

    workdir: Path = DEFAULT_WORKDIR
    output: Path = DEFAULT_OUTPUT
    scenario_file: Path = SCENARIO_FILE
    duration_seconds: float | None = None
    train: bool = True
    epochs: int = 4
    s3_port: int = 0
    prometheus_port: int = 0
    keep: bool = True
    live: bool | None = None  # None: a live view when stdout is a terminal
    seed: int = 7


class Demo:
    """Runs the demo; every process it starts is recorded in the local cluster's state, so :func:`demo_down`
    (or the clean-up on Ctrl-C, SIGTERM and failure) stops all of them."""

    def __init__(self, options: DemoOptions, console: Any | None = None) -> None:
        from rich.console import Console

        self.opts = options
        self.console = console or Console()
        self.scenario = load_scenario(options.scenario_file)
        if options.duration_seconds is not None:
            self.scenario = self.scenario.with_duration(options.duration_seconds)
        self.workdir = options.workdir.expanduser().resolve()
        self.steps = Steps(self.console)
        self.stack = DemoStack(self.workdir, self.steps, s3_port=options.s3_port, prometheus_port=options.prometheus_port)
        self._training: Training | None = None
        self.artifacts: dict[str, Artifact] = {}
        self.timeline: Timeline | None = None
        self.load: OpenLoopLoad | None = None
        self.retraining: rt.Retraining | None = None  # None: this demo runs no retraining (record.skipped says why)
        self.retraining_record = RetrainingRecord(model=rt.MODEL, namespace="default")

    @property
    def cluster(self) -> LocalCluster:
        return self.stack.cluster

    # ---- entry point ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        """The whole demo; returns the report path. On any failure or interrupt everything started is stopped."""
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        # Ctrl-C must stop the demo however it was launched: a parent that ran it in the background, under nohup or
        # from a thread may hand down SIGINT ignored or blocked, and then no KeyboardInterrupt would ever come.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        ok = False
        try:
            report = self._run()
            ok = True
            return report
        except (DemoError, KeyboardInterrupt, Terminated):
            raise
        except Exception as exc:
            raise DemoError("the demo", f"unexpected {type(exc).__name__}: {exc}",
                            f"logs are in {self.workdir / 'logs'} and {self.cluster.log_dir}; please report this") from exc
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            if self.load is not None:
                self.load.stop()
            if not ok or not self.opts.keep:
                self.stack.down(reason="the demo stopped early" if not ok else "--no-keep")

    def _on_sigterm(self, *_: Any) -> None:
        raise Terminated()

    def _run(self) -> Path:
        c = self.console
        c.rule("[bold]hybridrec demo[/bold]")
        c.print("hybridrec places PyTorch recommendation models on private and public GPU pools by [bold]data "
                "sensitivity[/bold] and [bold]price[/bold], and a cost controller steers replicas by demand, SLO and "
                "budget. This demo runs all of it on this machine and plays one compressed day of traffic.\n")
        stack = self.stack
        stack.check()
        self._start_training()
        stack.start_cluster()
        c.print(EXPLAIN["cluster"])
        stack.start_s3()
        stack.start_prometheus()
        stack.install()
        stack.start_operator(self.scenario.control_interval_s, self.scenario.operator_env)
        stack.start_pod_runner()
        self._step_models()
        self._step_apply()
        c.print(EXPLAIN["models"])
        self._start_retraining()
        self._step_first_replicas()
        sale = self.scenario.sale
        if sale is not None:
            c.print(EXPLAIN["sale"].format(window=f"{clock(sale.start_hour)}-{clock(sale.end_hour)}",
                                           mult=sale.multiplier, interval=self.scenario.control_interval_s))
        sc = self.scenario
        settings = [f"pool start-up {sc.pool_startup_seconds} s"]
        if sc.scale_down_stabilization_s is not None:
            settings.append(f"scale-down stabilization {sc.scale_down_stabilization_s} s")
        settings += [f"{k.removeprefix('HYBRIDREC_').removesuffix('_SECONDS').lower().replace('_', ' ')} {v} s"
                     for k, v in sorted(sc.operator_env.items()) if k.endswith("_SECONDS")]
        c.print(f"[dim]{sc.seconds_per_sim_hour:.1f} real seconds are one simulated hour, so the controller's time "
                f"constants are shortened to match: {', '.join(settings)}.[/dim]")
        self._traffic()
        self._step_retraining_outcome()
        return self._finish()

    # ---- models --------------------------------------------------------------------------------------------
    def _architectures(self) -> list[str]:
        return sorted({(d.get("spec", {}).get("model", {}) or {}).get("architecture", "two-tower") for d in docs(MODELS_FILE)})

    def _start_training(self) -> None:
        """Train in a background thread while the cluster and services start (they mostly wait; training computes)."""
        self._training = Training(self._architectures(), self.workdir / "artifacts", self.opts.train, self.opts.epochs)
        self._training.start()

    def _step_models(self) -> None:
        from hybridrec_server.artifacts import push

        training = self._training
        assert training is not None
        what = " and ".join(training.archs)
        title = (f"Training {what} on MovieLens 100K ({self.opts.epochs} epoch{'s' if self.opts.epochs > 1 else ''} max)"
                 if self.opts.train else f"Building small {what} models")
        with self.steps.step(title, "`make install` installs torch and the dataset", total=training.total_epochs) as h:
            while not training.done.wait(0.2):
                h.completed(training.epochs_done)
                h.note(training.last_line)
            h.completed(training.total_epochs)
            if training.error is not None:
                raise training.error
            for line in training.messages:
                self.console.print(line, highlight=False)
            for arch, (path, metrics) in training.results.items():
                uri = f"s3://{ARTIFACT_BUCKET}/{arch}/"
                sha = push(path, uri, endpoint_url=self.stack.services.s3_url)
                version = json.loads((path / "config.json").read_text()).get("version", "") if (path / "config.json").exists() else ""
                self.artifacts[arch] = Artifact(uri=uri, sha256=sha, architecture=arch, version=str(version)[:63], metrics=metrics)
            h.note(f"{training.seconds:.0f} s in the background while the services started; pushed to "
                   + ", ".join(a.uri for a in self.artifacts.values()))
        self._prepare_retraining()

    def _prepare_retraining(self) -> None:
        """Put the run's input (MovieLens 100K) in S3 when the served models were trained on it; else say why not."""
        from hybridrec_server.data import DatasetNotFoundError

        record = self.retraining_record
        record.serving_epochs = self.opts.epochs
        if not self.opts.train:
            record.skipped = "--no-train: the demo served small random-initialised models and trains nothing"
            return
        model = next((d for d in docs(MODELS_FILE) if d.get("metadata", {}).get("name") == rt.MODEL), None)
        if model is None:
            record.skipped = f"{MODELS_FILE} has no {rt.MODEL} model"
            return
        record.namespace = model["metadata"].get("namespace", "default")
        retraining = rt.Retraining(self.cluster, record.namespace, record, self.stack.ready_servers)
        try:
            retraining.upload_data(self.stack.services.s3_url, ARTIFACT_BUCKET)
        except DatasetNotFoundError as exc:
            record.skipped = f"MovieLens 100K is not installed ({exc})"
            return
        record.run = rt.run_name()
        record.epochs = rt.retrain_epochs(self.opts.epochs)
        self.retraining = retraining

    def _step_apply(self) -> None:
        title = "Applying 4 ComputePools and 3 RecModelDeployments"
        with self.steps.step(title, "the CRDs refuse invalid objects; the message above says which field") as h:
            pools = render_pools(docs(POOLS_FILE), self.scenario)
            models = render_models(docs(MODELS_FILE), self.scenario, self.artifacts)
            if self.retraining is not None:
                models = rt.with_training(models, rt.MODEL, rt.training_spec(ARTIFACT_BUCKET, rt.MODEL,
                                                                             self.retraining_record.epochs))
            self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pools))
            self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(models))
            self.timeline = Timeline(
                started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                real_seconds=self.scenario.real_seconds, start_hour=self.scenario.start_hour, currency="USD",
                pools=pool_infos(pools), models=model_infos(models),
                sale=FlashSale(self.scenario.sale.model, self.scenario.sale.start_hour, self.scenario.sale.end_hour,
                               self.scenario.sale.multiplier) if self.scenario.sale else None)
            h.note(", ".join(m.name for m in self.timeline.models))

    def _step_first_replicas(self) -> None:
        assert self.timeline is not None
        title = "Waiting for the first replicas to load their model and serve"
        models = self.timeline.models
        with self.steps.step(title, "the operator and pod runner logs are in " + str(self.workdir / "logs"),
                             total=len(models)) as h:
            def check() -> bool:
                ready = self.stack.ready_servers()
                n = sum(1 for m in models if ready.get(f"{m.namespace}/{m.name}"))
                h.note(f"{n}/{len(models)} models serving")
                h.completed(n)
                return n == len(models)

            self.steps.wait(title, "one ready server per model", check, 240,
                            f"look at {self.workdir / 'logs'} and {self.stack.services.runner_dir / 'logs'}",
                            self.stack.all_alive(title))

    # ---- traffic -------------------------------------------------------------------------------------------
    def _declare_sale(self, traffic_start: dt.datetime) -> None:
        event = sale_event(self.scenario, traffic_start)
        if event is None or self.timeline is None:
            return
        sale_model = next(m for m in self.timeline.models if m.name == self.scenario.sale.model)  # type: ignore[union-attr]
        patch = {"spec": {"scaling": {"schedule": [event]}}}
        self.cluster.kubectl("patch", "rmd", sale_model.name, "-n", sale_model.namespace, "--type=merge",
                             "-p", json.dumps(patch))

    def _load(self) -> OpenLoopLoad:
        """Poisson arrivals following each model's curve, to its ready servers (round robin, as a Service would)."""
        assert self.timeline is not None
        sc = self.scenario
        servers_file = self.stack.servers_file
        namespaces = {m.name: m.namespace for m in self.timeline.models}
        streams = []
        for m in sc.models:
            key = f"{namespaces.get(m.name, 'default')}/{m.name}"
            streams.append(Stream(m.name, lambda key=key: read_servers(servers_file, key),
                                  lambda t, name=m.name: offered_rps(sc, name, sc.sim_hour(t))))
        return OpenLoopLoad(streams, sc.real_seconds, max_inflight=sc.max_inflight, timeout_s=sc.request_timeout_s,
                            poisson=True, seed=self.opts.seed)

    def _query(self, client: Any, expr: str) -> Any:
        try:
            resp = client.get(f"{self.stack.services.prometheus_url}/api/v1/query", params={"query": expr})
            return resp.json() if resp.status_code == 200 else {}
        except Exception:  # noqa: BLE001 - a missed scrape shows as "-" in the view; the demo goes on
            return {}

    def _observe(self, client: Any, seen: set[str]) -> None:
        assert self.timeline is not None and self.load is not None
        sc = self.scenario
        t = min(self.load.elapsed_s, sc.real_seconds)
        sim = sc.sim_hour(t)
        sel = urllib.parse.quote(MANAGED_SELECTOR)
        rmds = self.cluster.api_get("/apis/hybridrec.io/v1alpha1/recmodeldeployments")["items"]
        pods = self.cluster.api_get(f"/api/v1/pods?labelSelector={sel}")["items"]
        events = self.cluster.api_get("/api/v1/events?fieldSelector="
                                      + urllib.parse.quote("involvedObject.kind=RecModelDeployment"))["items"]
        window = f"{max(10, 4 * 2)}s"
        p95 = prom_vector(self._query(client, PROM_P95.format(w=window)), ("namespace", "model"))
        cost = prom_vector(self._query(client, PROM_COST), ("namespace", "model", "pool"))
        # Served rate over about half a simulated hour: short enough to follow the curve, long enough to be smooth.
        load = load_snapshot(self.load, sc, window_s=min(5.0, max(2.0, 0.5 * sc.seconds_per_sim_hour)))
        self.timeline.samples.append(build_sample(t, sim, self.timeline.models, rmds, pods, p95, cost, load))
        self.timeline.decisions.extend(new_decisions(t, sim, rmds, events, seen))
        if self.retraining is not None:
            self.retraining.observe(t, sim)

    def _traffic(self) -> None:
        import httpx
        from rich.live import Live

        assert self.timeline is not None
        sc = self.scenario
        c = self.console
        traffic_start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        self._declare_sale(traffic_start)
        self.load = self._load()
        time.sleep(max(0.0, (traffic_start - dt.datetime.now(dt.UTC)).total_seconds()))
        c.rule(f"[bold]One simulated day in {sc.real_seconds:.0f} s[/bold]")
        self.load.start()
        seen: set[str] = set()
        live_mode = self.opts.live if self.opts.live is not None else c.is_terminal
        step = "playing the day of traffic"
        alive = self.stack.all_alive(step)
        last_line = -1.0
        failures = 0
        with httpx.Client(timeout=3.0, trust_env=False) as client, contextlib.ExitStack() as stack:
            live = stack.enter_context(Live(render_live(self.timeline, sc, 0.0), console=c, refresh_per_second=2,
                                            transient=False)) if live_mode else None
            while True:
                tick = time.monotonic()
                alive()
                if self.load.error is not None:
                    raise DemoError(step, f"the load generator failed: {self.load.error!r}")
                try:
                    self._observe(client, seen)
                    failures = 0
                except (OSError, ValueError, KeyError) as exc:  # urllib errors are OSErrors
                    failures += 1
                    if failures >= 5:
                        raise DemoError(step, f"cannot read the cluster any more: {exc}",
                                        f"look at {self.cluster.log_dir}") from exc
                elapsed = self.load.elapsed_s
                if live is not None:
                    live.update(render_live(self.timeline, sc, elapsed))
                elif elapsed - last_line >= 10 or not self.load.running:
                    last_line = elapsed
                    c.print(status_line(self.timeline, sc, elapsed))
                if not self.load.running:
                    break
                time.sleep(max(0.0, sc.sample_seconds - (time.monotonic() - tick)))

    # ---- retraining ----------------------------------------------------------------------------------------
    def _start_retraining(self) -> None:
        """Ask for the run as soon as the models are applied: the trainer starts up (torch, the data) while the first
        servers load, so the run is done sooner after the day; it trains through the morning of the simulated day."""
        if self.retraining is None:
            return
        self.console.print(EXPLAIN["retraining"].format(epochs=self.retraining_record.epochs, serving=self.opts.epochs))
        self.retraining.start(self.scenario.start_hour)
        self.console.print(f"Retraining: created RecModelTrainingRun {self.retraining_record.namespace}/"
                           f"{self.retraining.name} (trigger manual).", highlight=False)

    def _step_retraining_outcome(self) -> None:
        """Wait for the run's outcome and, once promoted, for every server of the model to run the new version.

        Not a reason to stop the demo: a run the gate refused, that failed or did not finish in time is reported as
        such (the serving version kept serving)."""
        retraining = self.retraining
        if retraining is None:
            return
        title = f"Waiting for the retraining run {retraining.name} to be gated and promoted"
        logs = self.stack.services.runner_dir / "logs"
        alive = self.stack.all_alive(title)
        with self.steps.step(title, f"the trainer's output is in {logs}; the operator's in {self.workdir / 'logs'}") as h:
            # The simulated clock runs on past the day while the demo waits: phases seen now are stamped after it.
            t0, since = (self.load.elapsed_s if self.load is not None else 0.0), time.monotonic()
            deadline = since + 240
            phase = ""
            while time.monotonic() < deadline:
                alive()
                t = t0 + time.monotonic() - since
                phase = retraining.observe(t, self.scenario.sim_hour(t))
                h.note(f"phase {phase or '?'}")
                if phase in rt.FINISHED:
                    break
                time.sleep(1.0)
            if phase != "Promoted":
                self.console.print(f"[yellow]The retraining run ended {phase or 'unobserved'}; the serving version "
                                   "kept serving (the report says why).[/yellow]")
                return
            new = (retraining.run_object().get("status") or {}).get("artifact", {}).get("sha256", "")
            served: list[str] = []
            while time.monotonic() < deadline + 60:
                served = retraining.served_shas()
                if served and set(served) == {new}:
                    break
                time.sleep(1.0)
            h.note(f"Promoted; {len(served)} server(s) answer with manifest sha256 {new[:12]}"
                   if served and set(served) == {new} else f"Promoted, but the servers report {served}")

    # ---- the end -------------------------------------------------------------------------------------------
    def _finish(self) -> Path:
        from hybridrec_local.report import write_report

        assert self.timeline is not None
        c = self.console
        rmd = self.cluster.kubectl("get", "rmd", "-A", check=False)
        self.timeline.kubectl_get_rmd = (rmd.stdout or rmd.stderr).rstrip()
        if not self.opts.train:
            self.timeline.notes.append("Models were small random-initialised artifacts (--no-train).")
        for arch, art in self.artifacts.items():
            if art.metrics:
                self.timeline.notes.append(
                    f"{arch} trained on MovieLens 100K: HR@10 {art.metrics.get('hr@10', 0):.3f} vs popularity "
                    f"{art.metrics.get('popularity_hr@10', 0):.3f}; served from {art.uri}.")
        retraining = self.retraining_record
        if self.retraining is not None:
            try:
                retraining = self.retraining.collect()
            except (OSError, ValueError, KeyError) as exc:  # the report still shows what was seen during the day
                self.timeline.notes.append(f"The retraining run could not be read at the end: {exc}")
        out = self.opts.output.expanduser().resolve()
        report = write_report(self.timeline, out, retraining)
        c.rule("[bold]What happened[/bold]")
        for line in summary_lines(self.timeline):
            c.print(f"  • {line}")
        from hybridrec_local.report_retraining import summary_line

        c.print(f"  • {summary_line(retraining)}", highlight=False)
        c.print("\n[bold]kubectl get rmd -A[/bold]")
        c.print(self.timeline.kubectl_get_rmd, markup=False, highlight=False)
        c.print(f"\n[bold green]Report:[/bold green] {report}  (open it in a browser; plots and timeline.json next to it)")
        if self.opts.keep:
            c.print(f"Everything is still running, so you can look around:\n"
                    f"  export KUBECONFIG={self.cluster.kubeconfig}\n"
                    f"  {self.cluster.binary('kubectl')} get rmd,cpool,pods -A\n"
                    f"  Prometheus: {self.stack.services.prometheus_url}\n"
                    f"Stop it all with [bold]make demo-down[/bold] (or `hybridrec demo down`).")
        return report


def demo_down(workdir: Path = DEFAULT_WORKDIR) -> list[str]:
    """Stop every process a demo recorded in ``workdir`` (control plane, S3, Prometheus, operator, pod runner and the
    model servers under it). Returns the names of those that were running."""
    return LocalCluster(Path(workdir).expanduser() / "cluster").down(quiet=True)
