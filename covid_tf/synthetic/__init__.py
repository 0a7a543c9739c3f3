"""Synthetic data: chest X-rays in the Radiography Database layout (``xray``) and DICOM CT series (``ct``)."""
