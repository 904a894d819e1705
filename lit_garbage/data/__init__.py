"""Stage 1, data: the image-file contract, dataset scan and split manifest, decoded-image cache, transforms, the Lightning data module."""
