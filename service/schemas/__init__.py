"""Pydantic models of the HTTP request and response bodies (they also document the OpenAPI schema)."""
