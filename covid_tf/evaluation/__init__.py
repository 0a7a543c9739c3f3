"""The pieces of :mod:`covid_tf.evaluate`: metrics, bootstrap, calibration, thresholds, patients."""
