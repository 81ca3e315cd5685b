"""Fine-tuning: datasets from documents, chat examples and feedback; LoRA/full training; the model registry."""
