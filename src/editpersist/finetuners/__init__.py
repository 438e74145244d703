"""Fine-tuning methods (LoRA, DoRA, full, DreamBooth): configuration, adapters, data and the
training core."""
