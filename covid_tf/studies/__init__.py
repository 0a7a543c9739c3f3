"""Research studies of the notebooks (explanations vs lung and lesion masks, lung-ROI models side by side)."""
