"""visual_tokenizers."""
