"""The lung region of interest of a classifier: the --roi modes, the model's input images, fills and background."""
