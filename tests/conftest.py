import os
import random
from types import SimpleNamespace

import pytest

import fastflow
from fastflow._ref import matcher as _ref_matcher
from fastflow._ref import subjects as _ref_subjects

IMPLS = {
    "ref": SimpleNamespace(
        name="ref",
        Matcher=_ref_matcher.Matcher,
        validate_subject=_ref_subjects.validate_subject,
        validate_pattern=_ref_subjects.validate_pattern,
    )
}
if fastflow.COMPILED:
    from fastflow import _core

    IMPLS["native"] = SimpleNamespace(
        name="native",
        Matcher=_core.Matcher,
        validate_subject=_core.validate_subject,
        validate_pattern=_core.validate_pattern,
    )


@pytest.fixture(params=sorted(IMPLS))
def impl(request):
    """Runs a test once per core: the compiled one and the pure-Python reference."""
    return IMPLS[request.param]


@pytest.fixture
def seed():
    """A seed for random tests, printed so a failure can be replayed
    (FASTFLOW_TEST_SEED=<n> pytest ...)."""
    s = int(os.environ.get("FASTFLOW_TEST_SEED") or random.randrange(1 << 32))
    print("FASTFLOW_TEST_SEED={}".format(s))
    return s
