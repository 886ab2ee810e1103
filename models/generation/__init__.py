"""Generation: the sampling loop, loading models to sample from, dialling, blending and choosing a
model."""
