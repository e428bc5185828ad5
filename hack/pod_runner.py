#!/usr/bin/env python3
"""Local pod runner (see local/hybridrec_local/podrunner.py): real model-server processes for pods on kwok nodes.

    python hack/pod_runner.py --kubeconfig ~/.cache/hybridrec/cluster/kubeconfig --state-dir /tmp/hybridrec-runner --s3 http://127.0.0.1:5000
"""

import sys

from hybridrec_local.podrunner import main

if __name__ == "__main__":
    sys.exit(main())
