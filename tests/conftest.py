import jax
import pytest


@pytest.fixture
def x64():
    """Run one test with 64-bit floats enabled, and restore the default afterwards."""
    with jax.enable_x64(True):
        yield
