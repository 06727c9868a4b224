"""Build the compiled core `pyotp._core` from src/_core.pyx (which includes src/core/*.pyx).

PYOTP_DEBUG=1 builds with internal invariant checks on (CYTHON_DEBUG-style asserts in the
core); CI runs the suite once that way.
"""
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("PYOTP_DEBUG") == "1"
macros = [("PYOTP_DEBUG", "1" if debug else "0")]
if sys.platform == "win32":
    extra = ["/O2"]
else:
    extra = ["-O2" if not debug else "-O0", "-g0" if not debug else "-g"]

ext = Extension(
    "pyotp._core",
    ["src/_core.pyx"],
    include_dirs=["src/core"],
    define_macros=macros,
    extra_compile_args=extra,
)

setup(
    ext_modules=cythonize(
        [ext],
        include_path=["src", "src/core"],
        compiler_directives={
            "language_level": "3",
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        compile_time_env={"PYOTP_DEBUG": debug},
        annotate=os.environ.get("PYOTP_ANNOTATE") == "1",
    )
)
