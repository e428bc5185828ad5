"""hybridrec model server: PyTorch recommenders behind a dynamically batched HTTP API.

`POST /v1/recommend` and `POST /v1/recommend:batch` return top-k items for a user (popular items,
flagged `fallback: true`, for unknown users; sequence models also take the user's recent items as
`history`); `/healthz`, `/readyz` and `/metrics` serve Kubernetes probes and Prometheus. Errors are
`{"error": {"code", "message", "field"}}`. The same model also speaks the Open Inference Protocol
(KServe V2 REST) under `/v2`: health, server and model metadata, model readiness and
`POST /v2/models/{name}/infer`, through the same batcher, queue limit and metrics, with the
protocol's `{"error": "..."}` bodies.

Modules: `models` (architectures + registry: matrix factorisation, two-tower, SASRec), `data`/`train`
(MovieLens 100K, leave-one-out), `artifacts`/`export` (verified safetensors artifacts, S3 push/pull),
`predictor` (load/warm-up/predict), `batcher` (asyncio dynamic batching), `v2` (Open Inference
Protocol tensors), `errors`, `metrics`, `settings`, `app`, `cli`, `testing`.
"""
