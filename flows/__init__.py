"""genforge.flows: the only layer that knows Prefect: tasks, flows, artifacts, deployments, the CLI.

Importing this package sets Prefect defaults that suit a laptop with no network
(unless the user has set them): a longer start-up timeout for the embedded server and
no analytics.
"""

import os

_DEFAULTS = {
    # The embedded server takes 20-35 s to start on 2 cores; Prefect's default timeout is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
for _k, _v in _DEFAULTS.items():
    os.environ.setdefault(_k, _v)
