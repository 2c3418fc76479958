"""Training engine: accelerate loop, optimiser and schedule, checkpoints, logging."""
