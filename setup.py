"""Build hook for the one compiled module; everything else is declared in pyproject.toml.

``pyserf.memberlist._lzw`` is optional: where no C compiler is available the build skips it
and pyserf runs the pure-Python LZW codec in ``lzw.py`` instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pyserf.memberlist._lzw", ["pyserf/memberlist/_lzw.c"],
                             optional=True, extra_compile_args=["-O2"])])
