"""What the Lightning module needs beyond one training step: calibration, resume state, DDP checks."""
