"""genre_ray: find the best music-genre classifier for a collection by distributed search."""

__version__ = "0.1.0"
