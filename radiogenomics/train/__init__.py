"""Training engine: losses, the adversarial loop, checkpoints."""
