"""emoverse: emotion-conditioned poetry from Project Gutenberg, orchestrated by Prefect.

This package is the bottom layer, plain Python: the corpus stage (`corpus/`), tagging, schemas,
paths and settings. `models/` holds the machine-learning pieces, `tasks/` and `flows/` the
Prefect layer, `apps/` the CLI.
"""

__version__ = "0.1.0"
