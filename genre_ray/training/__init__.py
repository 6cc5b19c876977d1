"""Training: the loop, device and AMP, classical fits, augmentation, aggregation and inference.

No module here imports Ray or MLflow but :mod:`~genre_ray.training.trainable`, the Tune-facing one.
"""
