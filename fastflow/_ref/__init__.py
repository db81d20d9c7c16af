"""Pure-Python reference implementations of the native core.

They are the oracles of the differential tests and the fallback core when
``FASTFLOW_NO_EXTENSIONS=1`` (no C compiler). They favour clarity over speed
and must behave exactly like ``src_ext/`` on every input.
"""
