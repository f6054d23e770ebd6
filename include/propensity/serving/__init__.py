"""Serving: model backends, deploys to the Triton repository, and the prediction API."""
