"""Benchmarks and research (recipe comparisons, ablation, the seed's Keras rebuild): not imported by the product."""
