"""Training: configuration, the two-phase fit, callbacks, losses, resume, tuning, distribution, run folders."""
