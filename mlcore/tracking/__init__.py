"""The only place that talks to MLflow. Clients are made here, at call time, never at import."""
