"""Visual autoregressive (VAR) next-scale prediction: tokenizer, transformer, and training."""
