"""The admin API (/api) and its OpenAPI document."""
