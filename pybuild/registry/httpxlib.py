"""httpx, loaded without what a synchronous registry client never uses.

Start-up of every build that pulls: httpcore (httpx's transport) imports trio and anyio
when they are installed, only for async use (trio: 70 ms here), httpx imports its own
command line (`httpx._main`: click, pygments, rich; 55 ms), and `idna` (12 ms of Unicode
tables) for host names that are not ASCII. The first three are hidden while httpx loads
(both packages expect their import to fail), idna is deferred to its first use
(pybuild/deferredimport.py); for anyone else they are all there right after. Import
httpx from here:

    from pybuild.registry.httpxlib import httpx, tls_context
"""
from __future__ import annotations

import os
import ssl
import threading

from pybuild.deferredimport import import_with

import_with("httpcore", hidden=("trio", "anyio"), deferred=("idna",))
httpx = import_with("httpx", hidden=("trio", "anyio", "httpx._main"), deferred=("idna",))

__all__ = ["httpx", "tls_context"]


class _CertsOnFirstUse(ssl.SSLContext):
    """An SSL context that reads its CA certificates at its first TLS connection."""

    _certs_lock = threading.Lock()
    _certs_read = False

    def _read_certs(self) -> None:
        with self._certs_lock:
            if self._certs_read:
                return
            # httpx's own choice for verify=True (httpx._config.create_ssl_context)
            if os.environ.get("SSL_CERT_FILE"):
                self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
            elif os.environ.get("SSL_CERT_DIR"):
                self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
            else:
                import certifi

                self.load_verify_locations(cafile=certifi.where())
            self._certs_read = True

    def wrap_socket(self, *args, **kwargs):
        self._read_certs()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args, **kwargs):  # TLS through an HTTPS proxy
        self._read_certs()
        return super().wrap_bio(*args, **kwargs)


def tls_context() -> ssl.SSLContext:
    """What httpx's `verify=True` makes (hostname checked, certificate required, the CAs
    of SSL_CERT_FILE, else SSL_CERT_DIR, else certifi), except that the certificates are
    read at the first TLS handshake rather than now: ~25 ms that a client of a plain-HTTP
    registry (a local one, a test's) never spends."""
    ctx = _CertsOnFirstUse(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    keylog = os.environ.get("SSLKEYLOGFILE")  # as ssl.create_default_context does
    if keylog and not __import__("sys").flags.ignore_environment:
        ctx.keylog_filename = keylog
    return ctx
