"""Runs: a training run's settings (``TrainConfig``), its folder's files (the run record), and a trained model
with its record."""
