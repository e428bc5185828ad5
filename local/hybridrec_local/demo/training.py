"""Training (or building) the models the demo serves, in a background thread while the services start: they mostly
wait, training computes. The demo joins it before pushing the artifacts to S3.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


class _EpochHandler(logging.Handler):
    """Advances the training progress bar on the trainer's per-epoch log line."""

    def __init__(self, on_epoch: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._on_epoch = on_epoch

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("epoch "):
            self._on_epoch(msg)


class Training(threading.Thread):
    """Trains (or builds) one artifact per architecture in the background; the demo joins it before pushing."""

    def __init__(self, archs: Sequence[str], out_dir: Path, train: bool, epochs: int) -> None:
        super().__init__(name="demo-training", daemon=True)
        self.archs, self.out_dir, self.train, self.epochs = list(archs), out_dir, train, epochs
        self.results: dict[str, tuple[Path, Mapping[str, Any]]] = {}
        self.messages: list[str] = []  # printed when the demo reaches the training step, to keep the story in order
        self.epochs_done = 0
        self.last_line = ""
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.seconds = 0.0

    @property
    def total_epochs(self) -> int:
        return self.epochs * len(self.archs)

    def run(self) -> None:
        started = time.monotonic()
        try:
            for arch in self.archs:
                self.results[arch] = self._one(arch)
                self.epochs_done = self.epochs * (self.archs.index(arch) + 1)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by the training step
            self.error = exc
        finally:
            self.seconds = time.monotonic() - started
            self.done.set()

    def _on_epoch(self, arch: str, msg: str) -> None:
        self.epochs_done += 1
        self.last_line = f"{arch}: {msg}"

    def _one(self, arch: str) -> tuple[Path, Mapping[str, Any]]:
        from hybridrec_server.data import DatasetNotFoundError
        from hybridrec_server.testing import make_small_artifact

        out = self.out_dir / arch
        shutil.rmtree(out, ignore_errors=True)
        if not self.train:
            self.messages.append(f"  --no-train: serving a small random-initialised {arch} model (MovieLens 100K shape)")
            return make_small_artifact(out, arch, version=f"{arch}-small-demo"), {}
        try:
            return self._train(arch, out)
        except DatasetNotFoundError as exc:
            self.messages.append(f"[yellow]  MovieLens 100K is not installed ({exc}); serving a small random-initialised "
                                 f"{arch} model instead. `make install` installs the dataset.[/yellow]")
            return make_small_artifact(out, arch, version=f"{arch}-small-demo"), {}

    def _train(self, arch: str, out: Path) -> tuple[Path, Mapping[str, Any]]:
        import torch

        from hybridrec_server.train import format_report, train_and_evaluate

        handler = _EpochHandler(lambda msg: self._on_epoch(arch, msg))
        train_log = logging.getLogger("hybridrec_server.train")
        train_log.addHandler(handler)
        old_level = train_log.level
        train_log.setLevel(logging.INFO)
        threads = torch.get_num_threads()
        # The control plane and Prometheus share the cores: one CPU thread trains ~5x faster here than OpenMP
        # threads spinning against them (a GPU, when present, is picked by the trainer regardless).
        torch.set_num_threads(1)
        try:
            path, metrics = train_and_evaluate(arch, epochs=self.epochs, out_dir=out, seed=0, version=f"{arch}-ml100k-demo")
        finally:
            torch.set_num_threads(threads)
            train_log.removeHandler(handler)
            train_log.setLevel(old_level)
        self.messages.append(f"  trained {format_report(metrics)}")
        return path, metrics
