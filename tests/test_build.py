"""The install really loaded the compiled core, and the switches work."""

import os
import subprocess
import sys

import pytest

import fastflow

NO_EXT = os.environ.get("FASTFLOW_NO_EXTENSIONS", "").strip().lower() in ("1", "true", "yes", "on")


@pytest.mark.skipif(NO_EXT, reason="FASTFLOW_NO_EXTENSIONS=1 selects the reference core")
def test_compiled_core_is_loaded():
    from fastflow import _core

    assert fastflow.COMPILED is True
    assert fastflow.Matcher is _core.Matcher
    assert fastflow.Matcher.__module__ == "fastflow._core"
    assert _core.__file__.endswith((".so", ".pyd"))
    assert _core.COMPILED is True


def _run(code, **env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=120)


def test_no_extensions_switch_selects_the_reference():
    r = _run("import fastflow; print(fastflow.COMPILED, fastflow.Matcher.__module__)",
             FASTFLOW_NO_EXTENSIONS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "fastflow._ref.matcher"]


def test_reference_core_runs_the_demo():
    r = _run("from fastflow.cli import main; main(['demo', '--subs', '200', '--publishes', '2000', "
             "'--subjects', '500', '--repeat', '1'])", FASTFLOW_NO_EXTENSIONS="1")
    assert r.returncode == 0, r.stderr
    assert "reference core" in r.stdout and "M publishes/s" in r.stdout


@pytest.mark.skipif(NO_EXT, reason="needs the compiled core")
def test_debug_flag_matches_the_build():
    from fastflow import _core

    # FASTFLOW_DEBUG=1 at build time compiles in the invariant checks
    assert _core.DEBUG in (True, False)
    if os.environ.get("FASTFLOW_EXPECT_DEBUG_BUILD") == "1":
        assert _core.DEBUG is True
