"""pybuild: Dockerfiles into layered OCI images, and a runner to start them.

Kept import-light on purpose: the CLI imports submodules lazily. The library surface
is `pybuild.api`.
"""
__version__ = "0.1.0"
