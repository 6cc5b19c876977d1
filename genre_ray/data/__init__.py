"""Collections, manifests, splits, audio decoding and the demo generator. No Ray, no MLflow."""
