"""Evaluation: metrics, bootstrap, calibration, operating points, patients, the evaluation and prediction paths."""
