"""Only what pyproject.toml cannot say without setuptools' experimental ``ext-modules``: the
C twin of :func:`meshlab.netfilter.shapes.match_line` (the rule parser's fast path). It is
optional: without a C compiler and Python's headers it is left out, and the Python function
is used instead (the same answers, slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("meshlab.netfilter._fastwords",
                             sources=["meshlab/netfilter/_fastwords.c"], optional=True)])
