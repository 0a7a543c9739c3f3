"""Lung segmentation: the X-ray U-Net (trained, shipped, run), the classical CT lungs, mask cleaning, plausibility."""
