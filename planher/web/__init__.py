"""What every endpoint shares: @endpoint, the OpenAPI document, errors, middleware."""
