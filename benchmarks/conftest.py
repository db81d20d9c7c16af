"""The fixtures the micro benchmarks share (``test_bench_*.py``)."""

import random

import pytest


@pytest.fixture(scope="module")
def payload(request):
    """``PAYLOAD`` random bytes of the module, from its ``SEED``."""
    m = request.module
    return random.Random(m.SEED).randbytes(m.PAYLOAD)


@pytest.fixture(scope="module")
def payloads(request):
    """``BATCH`` payloads of the module's ``PAYLOAD`` random bytes, from its ``SEED``."""
    m = request.module
    rnd = random.Random(m.SEED)
    return [rnd.randbytes(m.PAYLOAD) for _ in range(m.BATCH)]
