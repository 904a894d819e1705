"""`lit-garbage audit`: the photos of a dataset that would mislead a model (wrong labels, twins, outliers)."""
