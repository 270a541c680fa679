"""References as Docker parses them, where they live, and the credentials kept for them."""
from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from pybuild.registry import auth, reference as r
from pybuild.registry.errors import CredentialHelperError

H = "a" * 64


@pytest.mark.parametrize("ref, domain, path, tag, digest", [
    ("busybox", "docker.io", "library/busybox", "latest", ""),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", ""),
    ("library/busybox", "docker.io", "library/busybox", "latest", ""),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", ""),
    ("index.docker.io/library/busybox:1", "docker.io", "library/busybox", "1", ""),
    ("me/app", "docker.io", "me/app", "latest", ""),
    ("localhost/foo", "localhost", "foo", "latest", ""),
    ("localhost:5000/foo/bar:v1.2", "localhost:5000", "foo/bar", "v1.2", ""),
    ("127.0.0.1:5000/a/b@sha256:" + H, "127.0.0.1:5000", "a/b", "", "sha256:" + H),
    ("example.com:443/a/b:c@sha256:" + H, "example.com:443", "a/b", "c", "sha256:" + H),
    ("[::1]:5000/x", "[::1]:5000", "x", "latest", ""),
    ("ghcr.io/o/r/deep/name:t", "ghcr.io", "o/r/deep/name", "t", ""),
])
def test_parse_like_docker(ref, domain, path, tag, digest):
    p = r.parse_ref(ref)
    assert (p.domain, p.path, p.tag, p.digest) == (domain, path, tag, digest)


def test_normalize_and_familiar_names():
    assert r.normalize_ref("busybox") == "docker.io/library/busybox:latest"
    assert r.familiar_name("docker.io/library/busybox:latest") == "busybox:latest"
    assert r.familiar_name("docker.io/me/app:1") == "me/app:1"
    assert r.familiar_name("localhost:5000/me/app:1") == "localhost:5000/me/app:1"


@pytest.mark.parametrize("bad", ["", " busybox", "Busybox", "a/B", "busybox:", "busybox:-x",
                                 "a@sha256:zz", "a@md5:" + "0" * 32, "a//b", "docker.io/" + H])
def test_invalid_references(bad):
    with pytest.raises(r.InvalidReference):
        r.parse_ref(bad)


def test_api_host_and_credential_key():
    assert r.api_host("docker.io") == "registry-1.docker.io"
    assert r.api_host("ghcr.io") == "ghcr.io"
    assert r.credential_key("docker.io") == "https://index.docker.io/v1/"
    assert r.credential_key("localhost:5000") == "localhost:5000"


@pytest.mark.parametrize("host, loop", [
    ("127.0.0.1:5000", True), ("127.1.2.3", True), ("localhost", True), ("localhost:80", True),
    ("[::1]:5000", True), ("::1", True), ("10.0.0.1:5000", False), ("example.com", False),
    ("localhost.example.com", False), ("docker.io", False),
])
def test_loopback(host, loop):
    assert r.is_loopback(host) is loop


def test_plain_http_only_for_loopback_or_named_insecure():
    env = {r.INSECURE_ENV: "reg.lan:5000, http://other.lan/"}
    assert r.insecure_registries(["https://X.example:1/"], env) == {"x.example:1", "reg.lan:5000",
                                                                      "other.lan"}
    assert not r.endpoint_for("ghcr.io").insecure
    assert r.endpoint_for("127.0.0.1:5000").insecure
    assert r.endpoint_for("reg.lan:5000", ["reg.lan:5000"]).insecure
    assert not r.endpoint_for("reg.lan:5001", ["reg.lan:5000"]).insecure


def test_normalize_registry():
    for text in ("docker.io", "https://index.docker.io/v1/", "registry-1.docker.io"):
        assert r.normalize_registry(text) == "docker.io"
    assert r.normalize_registry("http://127.0.0.1:5000/") == "127.0.0.1:5000"


# --------------------------------------------------------------------------- challenges


def test_parse_www_authenticate():
    chs = auth.parse_www_authenticate(
        'Bearer realm="https://auth.example/token",service="reg.example",'
        'scope="repository:a/b:pull,push"')
    assert len(chs) == 1 and chs[0].scheme == "bearer"
    assert chs[0].param("realm") == "https://auth.example/token"
    assert chs[0].param("scope") == "repository:a/b:pull,push"
    basic = auth.parse_www_authenticate('Basic realm="Registry Realm"')
    assert basic[0].scheme == "basic" and basic[0].param("realm") == "Registry Realm"
    two = auth.parse_www_authenticate('Basic realm="x", Bearer realm="y",service=s')
    assert [c.scheme for c in two] == ["basic", "bearer"] and two[1].param("service") == "s"


def test_credentials_never_show_their_secret():
    c = auth.Credentials("alice", "s3cret-pw", "tok-123")
    assert "s3cret-pw" not in repr(c) and "tok-123" not in repr(c) and "alice" in repr(c)
    assert not auth.ANONYMOUS


# --------------------------------------------------------------------------- config.json


def test_config_auths_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert auth.load_credentials("localhost:5000") == auth.ANONYMOUS
    where = auth.store_credentials("http://localhost:5000", auth.Credentials("u", "p:w"))
    path = tmp_path / "config.json"
    assert where == str(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert base64.b64decode(doc["auths"]["localhost:5000"]["auth"]) == b"u:p:w"
    assert auth.load_credentials("localhost:5000") == auth.Credentials("u", "p:w")
    auth.store_credentials("docker.io", auth.Credentials("hub", "x"))
    assert "https://index.docker.io/v1/" in json.loads(path.read_text())["auths"]
    assert auth.load_credentials("docker.io").username == "hub"
    assert auth.erase_credentials("localhost:5000")
    assert auth.load_credentials("localhost:5000") == auth.ANONYMOUS
    assert not auth.erase_credentials("localhost:5000")


def test_config_written_by_docker_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://reg.example": {"auth": base64.b64encode(b"bob:pw").decode()},
        "tok.example": {"identitytoken": "refresh-me"}}}))
    assert auth.load_credentials("reg.example") == auth.Credentials("bob", "pw")
    assert auth.load_credentials("tok.example").identity_token == "refresh-me"


def _helper(tmp_path, monkeypatch, name="fake") -> str:
    """A docker-credential-<name> that keeps its store in a JSON file."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    store = tmp_path / "helper-store.json"
    script = bindir / f"docker-credential-{name}"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
path = {str(store)!r}
try:
    db = json.load(open(path))
except FileNotFoundError:
    db = {{}}
action, data = sys.argv[1], sys.stdin.read()
if action == "get":
    if data.strip() not in db:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps(db[data.strip()]))
elif action == "store":
    d = json.loads(data); db[d["ServerURL"]] = d; json.dump(db, open(path, "w"))
elif action == "erase":
    db.pop(data.strip(), None); json.dump(db, open(path, "w"))
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return str(store)


def test_credential_helpers(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    store = _helper(tmp_path, monkeypatch)
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"reg.example": "fake"}}))
    assert auth.load_credentials("reg.example") == auth.ANONYMOUS  # helper says not found
    where = auth.store_credentials("reg.example", auth.Credentials("carol", "pw2"))
    assert where == "docker-credential-fake"
    assert "pw2" not in (tmp_path / "config.json").read_text()  # the secret went to the helper
    assert "pw2" in open(store).read()
    assert auth.load_credentials("reg.example") == auth.Credentials("carol", "pw2")
    # credsStore applies to every other registry
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "fake"}))
    auth.store_credentials("other.example", auth.Credentials("dan", "pw3"))
    assert auth.load_credentials("other.example").username == "dan"
    auth.erase_credentials("other.example")
    assert auth.load_credentials("other.example") == auth.ANONYMOUS


def test_missing_credential_helper_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "nosuchhelper"}))
    with pytest.raises(CredentialHelperError, match="docker-credential-nosuchhelper"):
        auth.load_credentials("reg.example")
