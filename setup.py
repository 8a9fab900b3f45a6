"""Only the optional native RTP fast path; everything else is configured in pyproject.toml.

``gateway.media._fastpath`` (Linux: epoll, recvmmsg, sendmmsg) is built when a C compiler and the
Python headers are present; ``optional=True`` lets the install go on without it, and the relay
then forwards in Python.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "gateway.media._fastpath",
            sources=["gateway/media/_fastpath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
