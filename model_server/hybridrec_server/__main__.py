"""``hybridrec-server`` / ``python -m hybridrec_server``: run the model server with uvicorn.

Exit codes: 0 after a graceful SIGTERM/SIGINT shutdown (readiness off, stop accepting, drain
in-flight requests), 1 when the model cannot be loaded (e.g. a tampered artifact), 2 on bad settings.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Any

EXIT_OK = 0
EXIT_LOAD_FAILED = 1
EXIT_BAD_SETTINGS = 2


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(app: Any, settings: Any) -> None:
    """Run ``app`` (from :func:`hybridrec_server.app.create_app`) under uvicorn until SIGTERM/SIGINT or a fatal
    load error. uvicorn picks uvloop and httptools when installed (``uvicorn[standard]``). The serving benchmark
    runs its no-op model through this same function, so both measure the same HTTP stack."""
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # readiness goes 503 at once; uvicorn then stops accepting and drains in-flight requests
            app.state.begin_shutdown()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        lifespan="on",
        server_header=False,
    )
    server = _Server(config)

    def on_fatal(exc: BaseException) -> None:
        server.should_exit = True

    app.state.on_fatal = on_fatal
    # uvicorn re-raises the captured signal after a graceful shutdown; with SIG_DFL that would turn a
    # clean drain into "killed by SIGTERM" (exit 143). A no-op original handler keeps exit code 0.
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Read settings from the environment, start serving, return the process exit code."""
    del argv  # configuration is environment-only, as the operator renders it
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        if not settings.model_uri:
            raise SettingsError("HYBRIDREC_MODEL_URI is required (s3://bucket/prefix/, file:// URI or directory)")
    except SettingsError as exc:
        print(f"hybridrec-server: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    _configure_logging(settings.log_level)

    import prometheus_client
    import torch

    from .app import create_app

    # Default 1 intra-op thread on CPU: the batched forward is small and the batcher already
    # serialises it; extra OpenMP threads mostly spin against the event loop for the same cores.
    if settings.torch_threads or not torch.cuda.is_available():
        torch.set_num_threads(settings.torch_threads or 1)
    prometheus_client.disable_created_metrics()
    app = create_app(settings)
    serve(app, settings)
    if app.state.load_error is not None:
        logging.getLogger("hybridrec_server").error("exiting: %s", app.state.load_error)
        return EXIT_LOAD_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
