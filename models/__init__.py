"""Tokenizer, model, training, generation and registry. Plain Python: no Prefect imports."""
