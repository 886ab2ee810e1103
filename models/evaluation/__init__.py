"""Evaluation: perplexity, fidelity under the judges, diversity, and the promotion gate's inputs."""
