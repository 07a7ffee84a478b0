"""Data: conversations and tokenization, media decoding, datasets, and the synthetic dataset."""
