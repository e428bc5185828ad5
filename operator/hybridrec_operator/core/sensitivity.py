"""The hard data-sensitivity rule, in exactly one place.

| class        | private pools                     | public pools                                         |
|--------------|-----------------------------------|------------------------------------------------------|
| restricted   | only pools that list `restricted` | never                                                |
| confidential | pools that list it                | never                                                |
| internal     | pools that list it                | only pools that list `internal`, with allowPublicBurst |
| public       | pools that list it                | pools that list it                                   |

Every planner (placement, the global allocator, the simulator) asks this module; nothing else decides it.
"""

from __future__ import annotations

from hybridrec_operator.api.models import SENSITIVE, ComputePoolSpec, Sensitivity, Tenancy


def pool_admits(sensitivity: Sensitivity, pool: ComputePoolSpec, *, allow_public_burst: bool) -> tuple[bool, str]:
    """Whether data of ``sensitivity`` may run on ``pool``, and why not when it may not."""
    sensitivity = Sensitivity(sensitivity)
    if sensitivity not in pool.allowed_sensitivity:
        return False, f"pool does not allow {sensitivity.value} data"
    if pool.tenancy == Tenancy.PUBLIC:
        # Defence in depth: the CRD already refuses public pools that list sensitive classes.
        if sensitivity in SENSITIVE:
            return False, f"{sensitivity.value} data never runs on a public pool"
        if sensitivity == Sensitivity.INTERNAL and not allow_public_burst:
            return False, "internal data bursts to public pools only with placement.allowPublicBurst"
    return True, "allowed"
