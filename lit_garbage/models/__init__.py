"""Stage 2, models: the network (timm backbone + the seed's head, normalisation inside) and Keras backbone weights."""
