"""A site's whole-slide images: OpenSlide reading, tissue mask, tiling, stain normalisation, tile encoders, feature cache."""
