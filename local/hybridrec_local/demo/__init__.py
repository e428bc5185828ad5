"""``hybridrec demo run``: the main job in one command, on the embedded local cluster.

It starts a real control plane (kwok fake GPU nodes, no Docker), an S3-compatible store (moto_server) holding models
trained on MovieLens 100K, a real Prometheus, the operator with its cost controller and the pod runner (one real
model server per Running pod), applies the sample ComputePools and three RecModelDeployments, then plays a compressed
day of traffic with a flash sale while a live terminal view shows where replicas run, p95 against the SLO and what it
costs. During the day one model is retrained for real (trained, evaluated, gated, promoted, served). It ends with an
HTML report (:mod:`hybridrec_local.report`, its Retraining section :mod:`hybridrec_local.report_retraining`).

One job per module:

* :mod:`.files`: where the demo reads its inputs and writes its outputs;
* :mod:`.scenario`: the scenario file and the traffic model (pure);
* :mod:`.manifests`: the sample pools and models as the demo applies them (pure);
* :mod:`.observe`: API objects, Prometheus answers and load statistics into timeline samples (pure);
* :mod:`.live`: the live terminal view and the plain status line (pure rendering);
* :mod:`.training`: training the served models in the background;
* :mod:`.retraining`: the one retraining run during the day (spec.training, the run, its outcome for the report);
* :mod:`.stack`: starting, checking and stopping the processes (cluster, S3, Prometheus, operator, pod runner);
* :mod:`.run`: the orchestration, step by step, with its clean-up guarantees.

The load comes from :mod:`hybridrec_local.loadgen`, shared with the tests.
"""
