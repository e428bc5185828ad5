"""Server settings from the environment.

The names are a contract with the operator (rendered pod env) and the local pod runner: keep them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """An environment variable has an invalid value."""


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start. Defaults suit a container (bind all interfaces)."""

    model_uri: str = ""
    model_sha256: str | None = None
    model_name: str = "hybridrec"
    namespace: str = "default"
    pool: str = "unknown"
    host: str = "0.0.0.0"
    port: int = 8080
    max_batch_size: int = 64
    max_batch_delay_ms: float = 5.0
    max_queue: int = 1024
    batching: bool = True
    model_cache_dir: str | None = None
    torch_threads: int | None = None
    s3_endpoint_url: str | None = None
    device: str | None = None
    #: auto (reduced precision for sequence models on CUDA only), fp32, bf16 or fp16 (HYBRIDREC_PRECISION)
    precision: str = "auto"
    log_level: str = "info"
    shutdown_timeout_s: float = 30.0
    #: Ids one forward call scores at most (user rows + candidates + exclusions summed over the batch). Larger
    #: batches are split, so one forward on the executor thread stays short: a 65,536-id forward of the sample
    #: two-tower model took 41 ms median, 151 ms worst of 20, on a shared 2-core CPU machine (load 4-6). Forwards
    #: run off the event loop; the bound limits how long the interpreter lock can be held in one go.
    max_forward_ids: int = 65_536
    #: Largest request body accepted (413 above it). Parsing is the one step that holds the interpreter lock in a
    #: single call (about 10 ms per MiB), so this also bounds how long /healthz can wait.
    max_body_bytes: int = 32 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read ``HYBRIDREC_*`` (and ``AWS_ENDPOINT_URL``) variables; ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        text = {
            "model_uri": "HYBRIDREC_MODEL_URI",
            "model_sha256": "HYBRIDREC_MODEL_SHA256",
            "model_name": "HYBRIDREC_MODEL_NAME",
            "namespace": "HYBRIDREC_NAMESPACE",
            "pool": "HYBRIDREC_POOL",
            "host": "HYBRIDREC_HOST",
            "model_cache_dir": "HYBRIDREC_MODEL_CACHE_DIR",
            "s3_endpoint_url": "AWS_ENDPOINT_URL",
            "device": "HYBRIDREC_DEVICE",
            "precision": "HYBRIDREC_PRECISION",
            "log_level": "HYBRIDREC_LOG_LEVEL",
        }
        for attr, var in text.items():
            if env.get(var):
                values[attr] = env[var]
        for attr, var, conv in (
            ("port", "HYBRIDREC_PORT", int),
            ("max_batch_size", "HYBRIDREC_MAX_BATCH_SIZE", int),
            ("max_batch_delay_ms", "HYBRIDREC_MAX_BATCH_DELAY_MS", float),
            ("max_queue", "HYBRIDREC_MAX_QUEUE", int),
            ("torch_threads", "HYBRIDREC_TORCH_THREADS", int),
            ("shutdown_timeout_s", "HYBRIDREC_SHUTDOWN_TIMEOUT_S", float),
            ("max_forward_ids", "HYBRIDREC_MAX_FORWARD_IDS", int),
            ("max_body_bytes", "HYBRIDREC_MAX_BODY_BYTES", int),
        ):
            raw = env.get(var)
            if raw:
                try:
                    values[attr] = conv(raw)
                except ValueError:
                    raise SettingsError(f"{var}={raw!r} is not a valid {conv.__name__}") from None
        raw = env.get("HYBRIDREC_BATCHING")
        if raw:
            if raw.lower() not in _TRUE | _FALSE:
                raise SettingsError(f"HYBRIDREC_BATCHING={raw!r}: use true or false")
            values["batching"] = raw.lower() in _TRUE
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values the server cannot run with."""
        if not 0 < self.port < 65536:
            raise SettingsError(f"HYBRIDREC_PORT={self.port} out of range")
        if self.max_batch_size < 1 or self.max_queue < 1 or self.max_batch_delay_ms < 0:
            raise SettingsError("HYBRIDREC_MAX_BATCH_SIZE/MAX_QUEUE must be >= 1 and MAX_BATCH_DELAY_MS >= 0")
        if self.max_forward_ids < 1 or self.max_body_bytes < 1024:
            raise SettingsError("HYBRIDREC_MAX_FORWARD_IDS must be >= 1 and HYBRIDREC_MAX_BODY_BYTES >= 1024")
        if self.precision not in {"auto", "fp32", "bf16", "fp16"}:
            raise SettingsError(f"HYBRIDREC_PRECISION={self.precision!r}: use auto, fp32, bf16 or fp16")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise SettingsError("HYBRIDREC_TORCH_THREADS must be >= 1")

    def with_(self, **changes: Any) -> "Settings":
        """A copy with some fields changed."""
        return replace(self, **changes)


SETTING_NAMES = tuple(f.name for f in fields(Settings))
