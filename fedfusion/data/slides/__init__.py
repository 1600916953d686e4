"""A site's whole-slide images: reading (OpenSlide), tissue mask, tiling, stain normalisation, tile encoders.

Tile features are cached on site (``feature_cache``).
"""
