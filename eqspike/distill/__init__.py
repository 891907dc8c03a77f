"""Distillation: the losses, the data preparation, the run directory and the trainer."""
