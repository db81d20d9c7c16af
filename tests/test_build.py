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


def test_the_wheel_holds_every_package_and_the_console(tmp_path):
    """A wheel of the pure-Python build (no compiler needed) has every
    package under fastflow/ and the console's page (docs/console.md)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(root, name), src / name)
    shutil.copytree(os.path.join(root, "fastflow"), src / "fastflow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    env = dict(os.environ, FASTFLOW_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("fastflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {os.path.relpath(d, root).replace(os.sep, "/")
                for d, _, files in os.walk(os.path.join(root, "fastflow"))
                if "__init__.py" in files}
    missing = sorted(p for p in packages if p + "/__init__.py" not in names)
    assert not missing, "packages left out of the wheel: {}".format(missing)
    from fastflow.server.console import STATIC_FILES
    for name in STATIC_FILES:
        assert "fastflow/server/console/static/" + name in names
