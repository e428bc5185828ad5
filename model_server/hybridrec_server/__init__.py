"""hybridrec model server: PyTorch recommenders behind a dynamically batched HTTP API.

`POST /v1/recommend` and `POST /v1/recommend:batch` return top-k items for a user (popular items,
flagged `fallback: true`, for unknown users); `/healthz`, `/readyz` and `/metrics` serve Kubernetes
probes and Prometheus. Errors are `{"error": {"code", "message", "field"}}`.

Modules: `models` (architectures + registry), `data`/`train` (MovieLens 100K, leave-one-out),
`artifacts`/`export` (verified safetensors artifacts, S3 push/pull), `predictor` (load/warm-up/predict),
`batcher` (asyncio dynamic batching), `errors`, `metrics`, `settings`, `app`, `cli`, `testing`.
"""
