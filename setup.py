"""The one compiled part of rowgate: the DataRow loop of masking (see README, Design notes).

``optional=True``: where it cannot be built (no C compiler, no OpenSSL headers), pip installs
rowgate without it and masking runs the pure-Python loop, slower and with the same output."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rowgate.masking._rowmask",
            sources=["src/rowgate/masking/_rowmask.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ],
)
