"""Energy predictions: features and models (pure), their store and their trainer."""
