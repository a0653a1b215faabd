"""Prefect flows: they only wire the stages (tasks/) and the core (mlcore/) together."""
import os

# Machines that run these may have no network: Prefect's temporary server would log a failed
# telemetry call on every start. `make` exports the same; this covers running the CLIs directly.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
