"""The Dockerfile frontend: parse, expand, compile to the graph IR (imports only pybuild.graph and pybuild.errors)."""
