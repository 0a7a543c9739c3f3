"""Data: discovery of dataset layouts, image files, duplicates, splits, preprocessing layers, tf.data pipelines.

Importing this package is cheap (no TensorFlow); import the submodule you need, e.g.
``from covid_tf.data import discover, splits``.
"""
