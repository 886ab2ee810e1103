"""Prefect flows: the emoverse DAG and its stages."""
