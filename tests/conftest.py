"""Shared test configuration: plugins with fixtures for the real systems the tests start."""

pytest_plugins = ["tests.support.registry", "tests.support.users"]
