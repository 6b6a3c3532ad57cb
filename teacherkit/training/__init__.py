"""Training engine: dataset, accelerate loop, checkpoints, early stopping, logging."""
