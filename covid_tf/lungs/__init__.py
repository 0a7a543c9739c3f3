"""Lung segmentation (a small U-Net), mask post-processing and lung regions of interest."""
