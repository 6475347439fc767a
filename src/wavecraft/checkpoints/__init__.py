"""Loading and saving checkpoints in AudioCraft, transformers and wavecraft layouts."""
