"""Helpers of the admission tests (a module of its own: two conftest modules cannot be imported by name)."""

from __future__ import annotations

import json
from typing import Any

from operator_harness import Kube

from support.stack import wait_for

# A namespace user with the built-in `edit` role: may change any Deployment or Service in the namespace by RBAC, so
# only the admission policies stand between it and hybridrec's children.
MALLORY = "mallory@example.com"


def refused(kube: Kube, *args: str, input: str | None = None, timeout: float = 30.0) -> str:
    """kubectl ``args`` is refused (policies become active a moment after they are created): its stderr."""
    def attempt() -> str | None:
        proc = kube(*args, input=input, check=False)
        return proc.stderr if proc.returncode != 0 else None
    return wait_for(attempt, timeout, f"kubectl {' '.join(args)} to be refused", interval=1.0)


def apply_json(kube: Kube, doc: dict[str, Any], *extra: str, check: bool = True) -> Any:
    return kube("apply", "--server-side", "--field-manager=hybridrec", "-f", "-", *extra, input=json.dumps(doc), check=check)
