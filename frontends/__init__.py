"""Frontends: build definitions compiled into the pybuild graph IR."""
