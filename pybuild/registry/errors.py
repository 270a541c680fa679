"""Errors of registry operations. Messages name the registry and repository, never a
credential."""
from __future__ import annotations

from pybuild.errors import ImageNotFound, PybuildError


class RegistryError(PybuildError):
    """A registry refused a request, or could not be reached."""


class RegistryUnreachable(RegistryError):
    pass


class AuthenticationError(RegistryError):
    """The registry wants credentials we do not have, or refused the ones we have."""


class ManifestNotFound(RegistryError, ImageNotFound):
    pass


class BlobVerificationError(RegistryError):
    """A blob's bytes do not hash to the digest the manifest names: nothing is stored."""


class CredentialHelperError(RegistryError):
    pass
