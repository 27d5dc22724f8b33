"""The contract's shapes: request bodies, queries and response models (pydantic)."""
