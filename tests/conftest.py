import jax
import pytest


@pytest.fixture
def x64():
    """Run one test with 64-bit floats enabled, and restore the default afterwards."""
    with jax.enable_x64(True):
        yield


def _recorded(event: str):
    """A list of the function names jax's ``event`` (a compile-time duration event) names while the test runs."""
    seen: list[str] = []

    def listener(name, duration, **kwargs):
        if name == event:
            seen.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def backend_compiles():
    """A list that records every XLA compilation (by function name) while the test runs."""
    yield from _recorded("/jax/core/compile/backend_compile_duration")


@pytest.fixture
def traces():
    """A list that records every function traced to a jaxpr (by name) while the test runs."""
    yield from _recorded("/jax/core/compile/jaxpr_trace_duration")


@pytest.fixture(autouse=True)
def no_persistent_compilation_cache(monkeypatch):
    """Keep the command-line entry points from writing to ~/.cache during tests."""
    monkeypatch.setenv("JAXNETS_CACHE_DIR", "")
