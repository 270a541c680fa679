"""The registry client's TLS context (pybuild/registry/httpxlib.py): made without reading
any certificate, it reads the CAs httpx's verify=True would (SSL_CERT_FILE, SSL_CERT_DIR,
certifi) at the first handshake, and verifies the server as httpx would."""
from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pybuild.registry.httpxlib import httpx, tls_context


class _Hello(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for that address."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=True)
    server = HTTPServer(("127.0.0.1", 0), _Hello)
    side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    side.load_cert_chain(str(cert), str(key))
    server.socket = side.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/", cert
    server.shutdown()
    server.server_close()


def _get(url: str) -> httpx.Response:
    ctx = tls_context()
    assert ctx.cert_store_stats()["x509_ca"] == 0  # nothing read when made
    with httpx.Client(verify=ctx, timeout=10) as client:
        return client.get(url)


def test_the_certificates_of_ssl_cert_file_are_read_at_the_handshake(https_server,
                                                                     monkeypatch):
    url, cert = https_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    r = _get(url)
    assert (r.status_code, r.text) == (200, "hello")


def test_ssl_cert_dir_is_used_when_there_is_no_file(https_server, monkeypatch, tmp_path):
    url, cert = https_server
    shutil.copy(cert, tmp_path / "test.pem")
    subprocess.run(["openssl", "rehash", str(tmp_path)], capture_output=True, check=True)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert _get(url).status_code == 200


def test_an_unknown_certificate_is_refused(https_server, monkeypatch):
    url, _ = https_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)  # certifi's CAs: not ours
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(url)


def test_the_host_name_is_checked(https_server, monkeypatch):
    url, cert = https_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with pytest.raises(httpx.ConnectError):
        _get(url.replace("127.0.0.1", "localhost"))  # the certificate names 127.0.0.1 only
