"""The core in use: the native one (``fastflow._core``) by default, the
pure-Python reference (``fastflow._ref``) with ``FASTFLOW_NO_EXTENSIONS=1``.

Every module of the package takes core classes from here, so that one
switch selects them all.  Both cores export the same names (their
``__all__``, the contract of ``fastflow/_core.pyi``)."""

from fastflow._settings import env_flag

if env_flag("FASTFLOW_NO_EXTENSIONS"):
    from fastflow import _ref as _selected
    from fastflow._ref import *  # noqa: F403 (exactly the core's names)
else:
    try:
        from fastflow import _core as _selected
        from fastflow._core import *  # noqa: F403
    except ImportError as _exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "fastflow's compiled core (fastflow._core) is missing or broken ({}); "
            "reinstall fastflow on a machine with a C compiler, or set "
            "FASTFLOW_NO_EXTENSIONS=1 to use the slow pure-Python core".format(_exc)
        ) from None

__all__ = _selected.__all__
