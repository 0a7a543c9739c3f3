"""The lungs, by pipeline stage: ``segmentation`` (lung masks), ``roi`` (what a classifier sees of the lungs) and
``energy`` (lung measures in words); ``lung_segmenter.keras`` beside them is the shipped X-ray lung segmenter."""
