"""Training: the loop, its data, the scratch tokenizer, the stages over paths and the conditional
model."""
