"""covid_tf: COVID-19 detection on chest X-rays and CT slices, with class activation maps.

Importing the package is cheap: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
