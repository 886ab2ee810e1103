"""Prefect tasks: thin wrappers that pass paths and small records, never big objects."""
