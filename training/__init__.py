"""Training: learning-rate schedules, optimizer, checkpoints, the trainer and its multi-process support."""
