"""emoverse: emotion-conditioned poetry from Project Gutenberg, orchestrated by Prefect.

This package holds the pure data logic (fetching, parsing, tagging) and the CLI.
`models/` holds the machine-learning pieces, `tasks/` and `flows/` the thin Prefect layer.
"""

__version__ = "0.1.0"
