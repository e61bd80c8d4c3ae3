"""rowgate's two compiled hot loops (see README, Design notes): masking's DataRow loop and the
framer's walk over runs of messages.

``optional=True``: where they cannot be built (no C compiler, no OpenSSL headers), pip installs
rowgate without them and the Python versions run, slower and with the same output."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rowgate.masking._rowmask",
            sources=["src/rowgate/masking/_rowmask.c", "src/rowgate/masking/_rowmask_values.c"],
            depends=["src/rowgate/masking/_rowmask.h"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        ),
        Extension(
            "rowgate.pgwire._walk",
            sources=["src/rowgate/pgwire/_walk.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
    ],
)
