"""Build script for fastflow's native core.

The Cython sources live in ``src_ext/`` and compile into extension modules
inside the ``fastflow`` package (``src_ext/core.pyx`` -> ``fastflow._core``).

Switches, as ``build_ext`` options or environment variables:

  --debug / FASTFLOW_DEBUG=1          internal invariant checks + line tracing
  --cython-always / FASTFLOW_CYTHON_ALWAYS=1   always re-cythonize
  --cython-annotate / FASTFLOW_CYTHON_ANNOTATE=1  write annotated HTML
  --cython-directives / FASTFLOW_CYTHON_DIRECTIVES="a=b,c=d"  extra directives
  FASTFLOW_NO_LIBCRYPTO=1             hash chain: compile the portable SHA-256
                                      instead of linking OpenSSL's libcrypto
  FASTFLOW_NO_EXTENSIONS=1            build nothing: the pure-Python reference
                                      core is used instead (slow, for machines
                                      without a C compiler)
"""

import glob
import os
import platform
import runpy
import subprocess

from setuptools import Extension, setup
from setuptools.errors import CCompilerError, ExecError as DistutilsExecError
from setuptools.errors import PlatformError as DistutilsPlatformError
from setuptools.command.build_ext import build_ext as _build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# One extension module for the whole core, uvloop-style: src_ext/core.pyx
# includes the matcher, subjects, ... so that every class can call every
# other at C level without cross-module imports.
MODULES = [
    ("fastflow._core", ["src_ext/core.pyx"]),
]

# The core's declarations: fastflow/_core.pxd (Cython finds a module's .pxd
# by the module's name, through the include path) and the .pxd/.pxi files it
# includes from src_ext/.  Cython's dependency scan follows the .pyx's
# includes only, so build_ext re-cythonizes when one of these is newer than
# the generated C.
DECLARATIONS = [os.path.join(HERE, "fastflow", "_core.pxd")] + glob.glob(
    os.path.join(HERE, "src_ext", "**", "*.px[di]"), recursive=True)

# the package's own reading of the switches; run by path: importing fastflow
# would load the core this script is about to build
_env_flag = runpy.run_path(os.path.join(HERE, "fastflow", "_settings.py"))["env_flag"]


def _libcrypto():
    """The linker argument for OpenSSL's libcrypto (its SHA-256 uses the
    processor's SHA extensions), or None: the core then compiles its
    portable SHA-256 (src_ext/ff_sha256.h).  Only the shared library is
    needed, not the headers: ``libcrypto.so.3`` is on every Debian/Ubuntu
    that has python3."""
    if _env_flag("FASTFLOW_NO_LIBCRYPTO"):
        return None
    import ctypes.util
    name = ctypes.util.find_library("crypto")
    if not name or not name.startswith("libcrypto.so"):
        return None
    return "-l:" + name


class BuildError(SystemExit):
    pass


def _declarations_newer(ext):
    """Whether a declaration file changed since ``ext``'s C was generated."""
    try:
        built = os.path.getmtime(os.path.join(HERE, os.path.splitext(ext.sources[0])[0] + ".c"))
    except OSError:
        return False            # no C yet: cythonize generates it anyway
    return any(os.path.getmtime(f) > built for f in DECLARATIONS)


class build_ext(_build_ext):
    user_options = _build_ext.user_options + [
        ("cython-always", None, "run cythonize() even if .c files are present"),
        ("cython-annotate", None, "produce a colorized HTML version of the Cython source"),
        ("cython-directives=", None, "Cython compiler directives (a=b,c=d)"),
    ]
    boolean_options = _build_ext.boolean_options + ["cython-always", "cython-annotate"]

    def initialize_options(self):
        super().initialize_options()
        self.cython_always = False
        self.cython_annotate = False
        self.cython_directives = None

    def finalize_options(self):
        super().finalize_options()
        self.cython_always = self.cython_always or _env_flag("FASTFLOW_CYTHON_ALWAYS")
        self.cython_annotate = self.cython_annotate or _env_flag("FASTFLOW_CYTHON_ANNOTATE")
        debug = bool(self.debug) or _env_flag("FASTFLOW_DEBUG")
        self.debug = debug

        directives = {
            "language_level": 3,
            "embedsignature": True,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        }
        extra = self.cython_directives or os.environ.get("FASTFLOW_CYTHON_DIRECTIVES", "")
        for item in filter(None, (s.strip() for s in extra.split(","))):
            key, _, value = item.partition("=")
            directives[key.strip()] = value.strip() or True
        if debug:
            directives.update(linetrace=True, boundscheck=True, wraparound=False)

        self._directives = directives

    def run(self):
        directives = self._directives
        debug = self.debug
        try:
            from Cython.Build import cythonize
        except ImportError:
            raise BuildError(
                "fastflow: building the native core needs Cython>=3.0 "
                "(pip installs it from pyproject.toml; to use the pure-Python "
                "core instead, set FASTFLOW_NO_EXTENSIONS=1)."
            ) from None

        for ext in self.extensions:
            macros = [("FASTFLOW_DEBUG", "1" if debug else "0")]
            if debug:
                macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
            crypto = _libcrypto()
            if crypto:
                macros.append(("FF_LIBCRYPTO", "1"))
                ext.extra_link_args = [crypto]
            ext.define_macros = macros
            ext.include_dirs = [os.path.join(HERE, "src_ext")]
            if debug:
                ext.extra_compile_args = ["-O0", "-g3"]
            else:
                ext.extra_compile_args = ["-O3"]

        # Re-cythonize whenever the directives changed since the last build
        # (switching between the debug and the release build).
        stamp = os.path.join(HERE, "src_ext", ".directives")
        want = repr(sorted(directives.items()))
        try:
            with open(stamp) as f:
                changed = f.read() != want
        except OSError:
            changed = True
        changed = changed or any(_declarations_newer(ext) for ext in self.extensions)
        cythonized = cythonize(
            self.extensions,
            compiler_directives=directives,
            annotate=self.cython_annotate,
            force=self.cython_always or changed,
            # src_ext for the includes, the project root for fastflow/_core.pxd
            include_path=[os.path.join(HERE, "src_ext"), HERE],
            # The debug and release builds differ in C macros only; keep
            # the generated C beside the .pyx (it is git-ignored).
            quiet=True,
        )
        # keep setuptools' own Extension objects, with the generated C
        for ext, done in zip(self.extensions, cythonized):
            ext.sources = done.sources
        try:
            with open(stamp, "w") as f:
                f.write(want)
        except OSError:
            pass
        super().run()

    def build_extension(self, ext):
        if not self.debug and _gcc_x86(self.compiler):
            # GCC inlines the memset of a fixed-size struct (Cython's
            # freelist objects: every Event) as ``rep stosq``, whose start-up
            # costs ~30 cycles on x86; unrolled stores take a few
            ext.extra_compile_args = ext.extra_compile_args + [
                "-mmemset-strategy=unrolled_loop:256:noalign,libcall:-1:noalign"]
        try:
            super().build_extension(ext)
        except (CCompilerError, DistutilsExecError, DistutilsPlatformError, OSError) as exc:
            raise BuildError(
                "fastflow: could not compile the native core ({}: {}); install a C "
                "compiler and the Python headers (for example: apt-get install gcc "
                "python3-dev), or set FASTFLOW_NO_EXTENSIONS=1 to use the slow "
                "pure-Python core.".format(type(exc).__name__, exc)
            ) from None


def _gcc_x86(compiler):
    """Whether the compiler is GCC (not clang) building for x86-64."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    cc = getattr(compiler, "compiler_so", None) or []
    if not cc:
        return False
    try:
        out = subprocess.run([cc[0], "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "clang" not in out.lower() and ("gcc" in out.lower() or "free software" in out.lower())


if _env_flag("FASTFLOW_NO_EXTENSIONS"):
    ext_modules = []
else:
    # (the C headers: a change to one recompiles the generated C)
    headers = glob.glob(os.path.join("src_ext", "*.h"))
    ext_modules = [Extension(name, sources, depends=headers) for name, sources in MODULES]

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
)
