"""Model folders: loading, verifying and writing Hugging Face folders and their cards."""
