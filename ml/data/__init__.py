"""Training data: packaged brain MR sources, contrast synthesis, slice sampling, datasets."""
