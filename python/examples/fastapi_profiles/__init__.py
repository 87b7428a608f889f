"""A FastAPI service, not the staleless API, caching user display names with the staleless bound
(the Python twin of ``examples/profiles``)."""

from examples.fastapi_profiles.app import ExampleConfig, create_app, main

__all__ = ["ExampleConfig", "create_app", "main"]
