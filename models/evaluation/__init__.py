"""Evaluation: perplexity, fidelity under the judges and diversity (`evaluate.py`), and the
promotion rule that decides over two evaluations (`promotion.py`)."""
