"""Shared test configuration: plugins with fixtures for the real systems the tests start."""

pytest_plugins = [
    "tests.support.registry",
    "tests.support.users",
    "tests.support.browser",
    "tests.support.kube_emulator",
    "tests.support.faulty_proxy",
    "tests.support.stub_server",
    "tests.support.worker",
]
