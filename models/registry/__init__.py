"""The per-emotion model registry on MLflow: versions, aliases, logging, relinking."""
