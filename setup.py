"""The optional C accelerator of the ETF codec; everything else is in pyproject.toml.

`optional=True`: without a C compiler the build skips it and beamish runs the
pure-Python codec (`beamish.dist.etf.ACCELERATED` is then False).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("beamish.dist._etf_c", ["src/beamish/dist/_etf_c.c"], optional=True)])
