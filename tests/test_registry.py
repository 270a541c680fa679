"""Pull and push against real registries (Debian's docker-registry: open, htpasswd basic auth,
token auth with a test token server) and the in-process fake one for faults: dropped
connections, corrupt blobs, 5xx answers. Everything listens on 127.0.0.1 only."""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from cache.digest import digest_bytes
from pybuild import api
from pybuild.image import mediatypes as mt
from pybuild.image.types import ImageConfigFile, Index
from pybuild.registry.client import RegistryClient, RetryPolicy
from pybuild.registry.errors import (AuthenticationError, BlobVerificationError,
                                     ManifestNotFound, RegistryError)
from pybuild.registry.fake import FakeRegistry
from pybuild.registry.pull import pull
from pybuild.registry.push import push, push_images
from pybuild.storeroot import StoreRoot

from conftest import Cli, needs_root, needs_tool

needs_registry = needs_tool("docker-registry")
FAST = RetryPolicy(attempts=4, backoff=0.01, max_delay=0.05)


# --------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"registry exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"registry did not start: {log.read_text()[-2000:]}")


class Registry:
    """One docker-registry process, stopped by its PID."""

    def __init__(self, workdir: Path, auth_yaml: str = ""):
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" + auth_yaml)
        self.log = workdir / "registry.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_http(f"http://{self.host}/v2/", self.proc, self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        pytest.skip("docker-registry and htpasswd (apache2-utils) are needed")
    d = tmp_path_factory.mktemp("basic-registry")
    pw = subprocess.run(["htpasswd", "-Bbn", "alice", "wonder-pw"], capture_output=True,
                        text=True, check=True).stdout
    (d / "htpasswd").write_text(pw)
    reg = Registry(d, f"auth:\n  htpasswd:\n    realm: test\n    path: {d / 'htpasswd'}\n")
    yield reg
    reg.stop()


class TokenServer:
    """Issues RS256 JWTs the way docker-registry's token auth expects (x5c header with the
    signing cert, issuer/audience/access claims), to one user with a password."""

    def __init__(self, workdir: Path, user: str, password: str):
        self.key, self.cert = workdir / "key.pem", workdir / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(self.key), "-out", str(self.cert), "-days", "2", "-subj",
                        "/CN=pybuild-test-token"], capture_output=True, check=True)
        self.der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                                  capture_output=True, check=True).stdout
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.issued = 0
        self.server = HTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, claims: dict) -> str:
        def b64u(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.der).decode()]}
        signing = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing.encode(), capture_output=True, check=True).stdout
        return signing + "." + b64u(sig)

    def _handler(self):
        ts = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.headers.get("Authorization") != ts.expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access = []
                for scope in parse_qs(urlsplit(self.path).query).get("scope", []):
                    for one in scope.split(" "):
                        kind, _, rest = one.partition(":")
                        name, _, actions = rest.rpartition(":")
                        access.append({"type": kind, "name": name,
                                       "actions": actions.split(",")})
                now = int(time.time())
                token = ts.sign({"iss": "pybuild-test", "sub": "alice", "aud": "test-registry",
                                 "exp": now + 300, "nbf": now - 10, "iat": now,
                                 "jti": secrets.token_hex(8), "access": access})
                ts.issued += 1
                body = json.dumps({"token": token}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return H

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    if shutil.which("docker-registry") is None or shutil.which("openssl") is None:
        pytest.skip("docker-registry and openssl are needed")
    d = tmp_path_factory.mktemp("token-registry")
    ts = TokenServer(d, "alice", "token-pw")
    try:
        reg = Registry(d, f"auth:\n  token:\n    realm: {ts.realm}\n    service: test-registry\n"
                          f"    issuer: pybuild-test\n    rootcertbundle: {ts.cert}\n")
    except BaseException:
        ts.stop()
        raise
    yield reg, ts
    reg.stop()
    ts.stop()


@pytest.fixture
def docker_config(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path / "docker"


# --------------------------------------------------------------------------- images


@pytest.fixture
def store(tmp_path) -> StoreRoot:
    return StoreRoot.open(str(tmp_path / "store"))


def make_image(store: StoreRoot, tmp_path: Path, name: str, size: int = 300_000,
               seed: bytes = b"") -> str:
    """A one-layer image (random, incompressible content) tagged `name`; its digest."""
    src = tmp_path / ("rootfs-" + digest_bytes(name.encode() + seed)[7:19])
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(size))
    (src / "name.txt").write_text(name)
    return api.import_rootfs(str(src), name, root=store).manifest_digest


def _no_tmp_leftovers(store: StoreRoot) -> bool:
    return os.listdir(store.blobs.tmp_dir) == []


# --------------------------------------------------------------------------- docker-registry


def test_push_pull_roundtrip_and_skopeo_reads_it(registry, store, tmp_path):
    digest = make_image(store, tmp_path, "local/app:1")
    ref = f"{registry.host}/test/app:1"
    result = api.push("local/app:1", ref, root=store)
    assert result.digest == digest and result.uploaded == 2 and result.existing == 0
    again = api.push("local/app:1", ref, root=store)  # HEAD says every blob is there
    assert again.uploaded == 0 and again.existing == 2

    other = StoreRoot.open(str(tmp_path / "other"))
    pulled = api.pull(ref, root=other)
    assert pulled.manifest_digest == digest and pulled.blobs_fetched == 2
    image = other.images.lookup(ref)
    other.images.verify(image)
    assert image.manifest_digest == digest

    if shutil.which("skopeo"):
        oci = tmp_path / "oci"
        subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                        f"oci:{oci}:app"], check=True, capture_output=True)
        info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{oci}:app"], check=True,
                                         capture_output=True, text=True).stdout)
        assert info["Digest"] == digest
        assert info["Layers"] == [layer.digest for layer in image.layers]


def test_pull_docker_schema2_written_by_skopeo(registry, store, tmp_path):
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    make_image(store, tmp_path, "local/s2:1", size=1000)
    layout = tmp_path / "layout.tar"
    api.save(["local/s2:1"], str(layout), root=store)
    ref = f"{registry.host}/test/schema2:1"
    subprocess.run(["skopeo", "copy", "-q", "--format", "v2s2", "--dest-tls-verify=false",
                    f"oci-archive:{layout}", f"docker://{ref}"], check=True, capture_output=True)
    other = StoreRoot.open(str(tmp_path / "other"))
    result = api.pull(ref, root=other)
    image = other.images.get(result.manifest_digest)
    assert image.manifest.media_type == mt.DOCKER_MANIFEST
    assert image.layers[0].media_type == mt.DOCKER_LAYER_GZIP
    other.images.verify(image)


def test_chunked_upload_and_cross_repository_mount(registry, store, tmp_path):
    digest = make_image(store, tmp_path, "local/big:1", size=200_000)
    ref = f"{registry.host}/test/chunked:1"
    result = push(store, store.images.get(digest), ref, monolithic_max=10_000,
                  chunk_size=64 * 1024)
    assert result.uploaded == 2
    # the store now knows test/chunked holds these blobs: another repo mounts them
    mounted = push(store, store.images.get(digest), f"{registry.host}/elsewhere/big:2")
    assert mounted.mounted == 2 and mounted.uploaded == 0
    other = StoreRoot.open(str(tmp_path / "other"))
    for r in (ref, f"{registry.host}/elsewhere/big:2"):
        assert pull(other, r).manifest_digest == digest
    other.images.verify(other.images.get(digest))


def test_manifest_unknown(registry, store):
    with pytest.raises(ManifestNotFound, match="manifest unknown"):
        pull(store, f"{registry.host}/test/nothing:here")


def test_basic_auth_login_push_pull_logout(basic_registry, store, tmp_path, docker_config):
    make_image(store, tmp_path, "local/secret:1", size=1000)
    ref = f"{basic_registry.host}/private/app:1"
    with pytest.raises(AuthenticationError, match="pybuild login") as e:
        api.push("local/secret:1", ref, root=store)
    with pytest.raises(AuthenticationError) as wrong:
        api.login(basic_registry.host, "alice", "not-the-pw")
    assert "not-the-pw" not in str(wrong.value)
    assert not (docker_config / "config.json").exists()

    api.login(basic_registry.host, "alice", "wonder-pw")
    doc = json.loads((docker_config / "config.json").read_text())
    assert base64.b64decode(doc["auths"][basic_registry.host]["auth"]) == b"alice:wonder-pw"
    digest = api.push("local/secret:1", ref, root=store).digest
    other = StoreRoot.open(str(tmp_path / "other"))
    assert api.pull(ref, root=other).manifest_digest == digest

    assert api.logout(basic_registry.host)
    with pytest.raises(AuthenticationError):
        api.pull(ref, root=StoreRoot.open(str(tmp_path / "third")))
    assert "wonder-pw" not in str(e.value)


def test_cli_never_prints_credentials(basic_registry, tmp_path, docker_config):
    cli = Cli(tmp_path / "store")  # inherits DOCKER_CONFIG from the fixture
    r = cli("login", basic_registry.host, "-u", "alice", "--password-stdin",
            input="bad-secret-123\n", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "bad-secret-123" not in r.stdout + r.stderr
    r = cli("login", basic_registry.host, "-u", "alice", "--password-stdin",
            input="wonder-pw\n")
    assert "Login Succeeded" in r.stdout
    r = cli("pull", f"{basic_registry.host}/private/none:1", check=False)
    assert r.returncode == 1 and "wonder-pw" not in r.stdout + r.stderr
    assert "manifest unknown" in r.stderr
    store_files = subprocess.run(["grep", "-rl", "wonder-pw", str(tmp_path / "store")],
                                 capture_output=True, text=True).stdout
    assert store_files == ""
    assert "Removing login credentials" in cli("logout", basic_registry.host).stdout


def test_bearer_token_flow_with_docker_registry(token_registry, store, tmp_path,
                                                docker_config):
    reg, ts = token_registry
    digest = make_image(store, tmp_path, "local/tok:1", size=1000)
    ref = f"{reg.host}/team/app:1"
    with pytest.raises(AuthenticationError, match="token service refused"):
        api.push("local/tok:1", ref, root=store)
    api.login(reg.host, "alice", "token-pw")
    assert api.push("local/tok:1", ref, root=store).digest == digest
    issued = ts.issued
    other = StoreRoot.open(str(tmp_path / "other"))
    assert api.pull(ref, root=other).manifest_digest == digest
    assert ts.issued == issued + 1  # one pull token, reused for every blob


# --------------------------------------------------------------------------- end to end


@needs_root
@needs_registry
def test_build_push_rmi_pull_run(registry, fresh_cli, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox:local\nRUN echo pushed-and-pulled > /msg\nCMD [\"cat\", \"/msg\"]\n")
    ref = f"{registry.host}/e2e/app:1"
    fresh_cli("build", "--progress=plain", "-t", ref, "--push", str(ctx))
    fresh_cli("rmi", ref)
    assert fresh_cli("run", "--rm", ref, check=False).returncode != 0

    other = Cli(tmp_path / "other")
    out = other("pull", ref)
    assert "Digest: sha256:" in out.stdout
    assert other("run", "--rm", ref).stdout.strip() == "pushed-and-pulled"

    # FROM an image only the registry has: pulled on the way; --pull sees a moved tag
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN cat /msg > /copy\n")
    third = Cli(tmp_path / "third")
    third("build", "--progress=plain", "-t", "derived:1", str(ctx))
    assert third("run", "--rm", "derived:1", "cat", "/copy").stdout.strip() == "pushed-and-pulled"

    (ctx / "Dockerfile").write_text("FROM busybox:local\nRUN echo moved > /msg\n")
    fresh_cli("build", "--progress=plain", "-o", f"type=registry,name={ref}", str(ctx))
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN cat /msg > /copy\n")
    third("build", "--progress=plain", "-t", "derived:2", str(ctx))
    assert third("run", "--rm", "derived:2", "cat", "/copy").stdout.strip() == "pushed-and-pulled"
    third("build", "--progress=plain", "--pull", "-t", "derived:3", str(ctx))
    assert third("run", "--rm", "derived:3", "cat", "/copy").stdout.strip() == "moved"


# --------------------------------------------------------------------------- faults (fake)


@pytest.fixture
def fake():
    with FakeRegistry() as reg:
        yield reg


def _client(reg: FakeRegistry, **kw) -> RegistryClient:
    return RegistryClient(reg.host, retry=FAST, **kw)


def _seed(reg: FakeRegistry, store: StoreRoot, tmp_path: Path, repo: str = "x/app",
          size: int = 300_000):
    digest = make_image(store, tmp_path, "seed:1", size=size)
    with _client(reg) as c:
        push(store, store.images.get(digest), f"{reg.host}/{repo}:1", client=c)
    image = store.images.get(digest)
    return digest, image.layers[0].digest


def test_dropped_connection_resumes_with_range(fake, store, tmp_path):
    digest, layer = _seed(fake, store, tmp_path, size=3_000_000)
    fake.faults.drop_after[layer] = 1_000_000
    other = StoreRoot.open(str(tmp_path / "other"))
    with _client(fake) as c:
        result = pull(other, f"{fake.host}/x/app:1", client=c)
    assert result.manifest_digest == digest
    assert fake.count("GET", f"/blobs/{layer}") == 2
    other.images.verify(other.images.get(digest))


def test_resume_when_the_server_ignores_range(fake, store, tmp_path):
    digest, layer = _seed(fake, store, tmp_path, size=2_000_000)
    fake.faults.drop_after[layer] = 700_000
    fake.faults.ignore_range = True
    other = StoreRoot.open(str(tmp_path / "other"))
    with _client(fake) as c:
        assert pull(other, f"{fake.host}/x/app:1", client=c).manifest_digest == digest
    other.images.verify(other.images.get(digest))


def test_corrupt_blob_is_refused_and_nothing_lands(fake, store, tmp_path):
    digest, layer = _seed(fake, store, tmp_path)
    fake.faults.corrupt.add(layer)
    other = StoreRoot.open(str(tmp_path / "other"))
    with _client(fake) as c, pytest.raises(BlobVerificationError, match="corrupt"):
        pull(other, f"{fake.host}/x/app:1", client=c)
    assert not other.blobs.has(layer)
    assert other.images.lookup(f"{fake.host}/x/app:1") is None
    assert _no_tmp_leftovers(other)


def test_5xx_and_429_are_retried_with_backoff(fake, store, tmp_path):
    digest, _ = _seed(fake, store, tmp_path, size=1000)
    other = StoreRoot.open(str(tmp_path / "other"))
    for status in (503, 429):
        fake.faults.fail_status, fake.faults.fail_next = status, 2
        before = len(fake.requests)
        with _client(fake) as c:
            assert pull(other, f"{fake.host}/x/app:1", client=c).manifest_digest == digest
        assert len(fake.requests) - before >= 3  # two refusals, then the answer
    fake.faults.fail_status, fake.faults.fail_next = 503, 50
    with _client(fake) as c, pytest.raises(RegistryError, match="503"):
        pull(StoreRoot.open(str(tmp_path / "third")), f"{fake.host}/x/app:1", client=c)


def test_bearer_flow_scopes_and_mount(store, tmp_path, docker_config):
    with FakeRegistry(bearer=True, users={"bob": "bob-pw"}) as reg:
        digest = make_image(store, tmp_path, "local/b:1", size=1000)
        with _client(reg) as c, pytest.raises(AuthenticationError, match="pybuild login"):
            push(store, store.images.get(digest), f"{reg.host}/a/one:1", client=c)
        api.login(reg.host, "bob", "bob-pw")
        with _client(reg) as c:
            first = push(store, store.images.get(digest), f"{reg.host}/a/one:1", client=c)
        assert first.uploaded == 2
        with _client(reg) as c:
            second = push(store, store.images.get(digest), f"{reg.host}/b/two:1", client=c)
        assert second.mounted == 2 and second.uploaded == 0
        assert reg.count("PUT", "/v2/b/two/blobs/uploads") == 0  # no bytes sent
        # the mount's token carries both scopes: push on the target, pull on the source
        assert any("repository:a/one:pull" in g and "repository:b/two:push" in g
                   for g in reg.tokens.values())
        other = StoreRoot.open(str(tmp_path / "other"))
        with _client(reg) as c:
            assert pull(other, f"{reg.host}/b/two:1", client=c).manifest_digest == digest


def test_index_platform_selection_and_multi_image_push(fake, store, tmp_path):
    amd = make_image(store, tmp_path, "p/amd:1", size=1000)
    arm_base = store.images.get(make_image(store, tmp_path, "p/arm:1", size=1000))
    # the same layer, an arm64 config: a second platform of one image
    cfg = ImageConfigFile.from_json(store.blobs.read(arm_base.config_digest))
    arm_cfg = ImageConfigFile(architecture="arm64", os="linux", variant="v8",
                              config=cfg.config, diff_ids=cfg.diff_ids)
    arm = store.images.commit(arm_cfg, list(arm_base.layers)).manifest_digest
    with _client(fake) as c:
        result = push_images(store, [store.images.get(amd), store.images.get(arm)],
                             f"{fake.host}/multi/app:1", client=c)
    media_type, data = fake.manifests[("multi/app", "1")]
    assert media_type == mt.OCI_INDEX and digest_bytes(data) == result.digest
    index = Index.from_json(data)
    assert [str(m.platform) for m in index.manifests] == ["linux/amd64", "linux/arm64/v8"]

    other = StoreRoot.open(str(tmp_path / "other"))
    with _client(fake) as c:
        got = pull(other, f"{fake.host}/multi/app:1", client=c, platform="linux/arm64")
    assert got.manifest_digest == arm and got.index_digest == result.digest
    assert got.platform == "linux/arm64/v8"
    with _client(fake) as c:
        host = pull(other, f"{fake.host}/multi/app:1", client=c, platform="linux/amd64")
    assert host.manifest_digest == amd
    with _client(fake) as c, pytest.raises(ManifestNotFound, match="linux/s390x"):
        pull(other, f"{fake.host}/multi/app:1", client=c, platform="linux/s390x")
    # by index digest: the store remembers which manifest it chose for the platform
    from pybuild.registry.resolve import resolve_image
    before = fake.count("GET", "/manifests/")
    assert resolve_image(other, f"{fake.host}/multi/app@{result.digest}",
                         "linux/arm64").manifest_digest == arm
    assert fake.count("GET", "/manifests/") == before  # answered by the store


def test_manifest_digest_is_checked(fake, store, tmp_path):
    digest, _ = _seed(fake, store, tmp_path, size=1000)
    media_type, data = fake.manifests[("x/app", "1")]
    fake.manifests[("x/app", "1")] = (media_type, data.replace(b"}", b" }", 1))
    fake.manifests[("x/app", digest)] = (media_type, data.replace(b"}", b" }", 1))
    other = StoreRoot.open(str(tmp_path / "other"))
    with _client(fake) as c, pytest.raises(BlobVerificationError):
        pull(other, f"{fake.host}/x/app@{digest}", client=c)


def test_tls_is_required_for_other_hosts():
    c = RegistryClient("registry.example.invalid")
    assert c.base == "https://registry.example.invalid"
    c.close()
    with pytest.raises(RegistryError):
        with RegistryClient("registry.example.invalid", retry=FAST) as c:
            c.ping()
