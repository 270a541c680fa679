"""Unit tests of the Dockerfile compiler (frontends/dockerfile/compile.py): instruction
results (ops and config), stages, --target pruning, ARG scoping and cache friendliness,
history text, ONBUILD, errors."""
from __future__ import annotations

import pytest

from frontends.dockerfile import instructions as ins
from frontends.dockerfile.compile import DEFAULT_PATH, compile_dockerfile, stage_names
from frontends.dockerfile.parser import DockerfileError
from pybuild import graph

DIGEST = "sha256:" + "ab" * 32


class FakeResolver:
    """Every image resolves to one digest and a config like a small distro image's."""

    def __init__(self, config: graph.ImageConfig | None = None, configs: dict | None = None):
        self.calls: list[tuple[str, str | None]] = []
        self.config = config or graph.ImageConfig(
            env=("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"), working_dir="/srv",
            cmd=("sh",), labels=(("base", "yes"),))
        self.configs = configs or {}

    def resolve(self, ref, platform=None):
        self.calls.append((ref, platform))
        return graph.ResolvedImage(ref="docker.io/library/" + ref, manifest_digest=DIGEST,
                                   config=self.configs.get(ref, self.config),
                                   platform=platform or "linux/amd64")


def build(text: str, **kw):
    resolver = kw.pop("resolver", None) or FakeResolver()
    return compile_dockerfile(text, resolver=resolver, **kw), resolver


def created_by(res) -> list[str]:
    return [h.created_by for h in res.target.history]


# --------------------------------------------------------------------------- FROM and stages


def test_from_image_uses_resolved_config_and_digest():
    res, r = build("FROM alpine:3\n")
    t = res.target
    assert r.calls == [("alpine:3", "linux/amd64")]
    assert isinstance(t.root, graph.ImageSource)
    assert t.root.manifest_digest == DIGEST and t.base is t.root
    assert t.config.working_dir == "/srv" and t.config.cmd == ("sh",)
    assert "LANG=C.UTF-8" in t.config.env
    assert t.history == ()


def test_from_scratch_needs_no_resolver_and_gets_default_path():
    res, r = build("FROM scratch\n")
    assert r.calls == []
    assert isinstance(res.target.root, graph.Scratch)
    assert res.target.config.env == ("PATH=" + DEFAULT_PATH,)
    assert res.target.base is None


def test_global_arg_in_from_and_platform_flag():
    res, r = build("ARG TAG=3.19\nARG P=linux/arm64\nFROM --platform=$P alpine:${TAG}\n")
    assert r.calls == [("alpine:3.19", "linux/arm64")]
    res, r = build("ARG TAG=3.19\nFROM alpine:${TAG}\n", build_args={"TAG": "edge"})
    assert r.calls == [("alpine:edge", "linux/amd64")]


def test_from_earlier_stage_inherits_state_config_and_history():
    res, r = build("FROM alpine AS base\nENV A=1\nRUN make\nFROM base\nRUN test\n")
    t = res.target
    assert len(r.calls) == 1
    assert isinstance(t.root, graph.Exec) and isinstance(t.root.root, graph.Exec)
    assert "A=1" in t.config.env
    assert created_by(res) == ["ENV A=1", "RUN /bin/sh -c make # buildkit",
                               "RUN /bin/sh -c test # buildkit"]
    assert t.base is not None and t.base.manifest_digest == DIGEST


def test_copy_from_stage_name_and_index():
    text = "FROM alpine AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /a\nCOPY --from=0 /out /b\n"
    res, _ = build(text)
    second = res.target.root
    first = second.root
    assert isinstance(first, graph.FileOp) and isinstance(second, graph.FileOp)
    assert first.actions[0].source is second.actions[0].source
    assert isinstance(first.actions[0].source, graph.Exec)
    assert created_by(res) == ["COPY /out /a # buildkit", "COPY /out /b # buildkit"]


def test_copy_from_image_reference_is_resolved():
    res, r = build("FROM scratch\nCOPY --from=nginx:1 /etc/nginx /etc/nginx\n")
    assert r.calls == [("nginx:1", "linux/amd64")]
    src = res.target.root.actions[0].source
    assert isinstance(src, graph.ImageSource) and src.manifest_digest == DIGEST


def test_target_pruning_skips_unneeded_stages():
    text = ("FROM alpine AS a\nRUN a\nFROM debian AS b\nRUN b\n"
            "FROM ubuntu AS c\nCOPY --from=a /x /x\n")
    res, r = build(text, target="C")
    assert [c[0] for c in r.calls] == ["alpine", "ubuntu"]
    assert res.target.stage_name == "c"
    res, r = build(text, target="b")
    assert [c[0] for c in r.calls] == ["debian"]


def test_unknown_target_suggests():
    with pytest.raises(DockerfileError) as exc:
        build("FROM scratch AS build\nFROM scratch AS final\n", target="buidl")
    assert exc.value.message == 'target stage "buidl" could not be found (did you mean build?)'


def test_cycle_is_an_error():
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\nCOPY --from=a / /\n")
    assert exc.value.message == "circular dependency detected on stage: a"


def test_copy_from_later_stage_is_an_error():
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\n", target="a")
    assert "needs to be defined before current stage" in exc.value.message


def test_invalid_stage_index_and_from_variable():
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nCOPY --from=5 / /\n")
    assert exc.value.message == "invalid stage index 5"
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nARG S=x\nCOPY --from=$S / /\n")
    assert "variable expansion is not supported for --from" in exc.value.message


def test_stage_names():
    assert stage_names("FROM a AS One\nFROM b\n") == ("one", "")


# --------------------------------------------------------------------------- RUN


def test_run_shell_and_exec_forms():
    res, _ = build("FROM alpine\nUSER app\nRUN echo $HOME hi\nRUN [\"ls\", \"-l\"]\n")
    exec2 = res.target.root
    exec1 = exec2.root
    assert exec1.args == ("/bin/sh", "-c", "echo $HOME hi")
    assert exec2.args == ("ls", "-l")
    assert exec1.user == "app" and exec1.cwd == "/srv"
    assert exec1.env == ("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8")
    assert exec1.network == "default" and exec1.security == "sandbox"
    assert created_by(res)[1:] == ["RUN /bin/sh -c echo $HOME hi # buildkit",
                                   'RUN ls -l # buildkit']
    assert res.target.history[1].op is exec1


def test_run_flags_network_security_and_global_network():
    res, _ = build("FROM alpine\nRUN --network=none --security=insecure true\n")
    assert res.target.root.network == "none" and res.target.root.security == "insecure"
    res, _ = build("FROM alpine\nRUN true\n", network="host")
    assert res.target.root.network == "host"


def test_shell_instruction_changes_later_shell_forms():
    res, _ = build('FROM alpine\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\nRUN a | b\nCMD x\n')
    t = res.target
    assert t.root.args == ("/bin/bash", "-eo", "pipefail", "-c", "a | b")
    assert t.config.cmd == ("/bin/bash", "-eo", "pipefail", "-c", "x")
    assert created_by(res)[0] == "SHELL [/bin/bash -eo pipefail -c]"


def test_run_mounts():
    text = ("FROM alpine AS deps\nFROM alpine\nWORKDIR /w\n"
            "RUN --mount=type=cache,target=/root/.cache,sharing=locked "
            "--mount=type=bind,from=deps,source=/lib,target=lib "
            "--mount=type=secret,id=tok --mount=type=tmpfs,target=/t,size=1m "
            "--mount=type=ssh true\n")
    res, _ = build(text)
    cache, bind, secret, tmpfs, ssh = res.target.root.mounts
    assert (cache.type, cache.target, cache.cache_id, cache.sharing, cache.readonly,
            cache.mode) == ("cache", "/root/.cache", "/root/.cache", "locked", False, 0o755)
    assert (bind.type, bind.target, bind.selector, bind.readonly) == ("bind", "/w/lib", "/lib", True)
    assert isinstance(bind.source, graph.ImageSource)
    assert (secret.type, secret.target, secret.secret_id, secret.mode) == (
        "secret", "/run/secrets/tok", "tok", 0o400)
    assert (tmpfs.type, tmpfs.size, tmpfs.readonly) == ("tmpfs", 1 << 20, False)
    assert (ssh.type, ssh.secret_id, ssh.target, ssh.mode) == (
        "ssh", "default", "/run/buildkit/ssh_agent.4", 0o600)


def test_run_mount_values_expand_args_and_bind_defaults_to_context():
    res, _ = build("FROM alpine\nARG D=/data\nRUN --mount=target=$D true\n")
    m = res.target.root.mounts[0]
    assert m.target == "/data" and isinstance(m.source, graph.LocalSource)


def test_run_mount_errors():
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nRUN --mount=type=foo,target=/x true\n")
    assert exc.value.message.startswith('unsupported mount type "foo"')
    assert exc.value.line == 2
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nRUN --mount=type=bind,target=/x,mode=0700 true\n")
    assert exc.value.message == 'mode not allowed for "bind" type mounts'


def test_run_heredoc_script_and_shebang():
    res, _ = build("FROM alpine\nRUN <<EOF\necho a\necho b\nEOF\n")
    assert res.target.root.args == ("/bin/sh", "-c", "echo a\necho b\n")
    res, _ = build("FROM alpine\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n")
    run = res.target.root
    assert run.args == ("/bin/sh", "-c", "/dev/pipes/EOF")
    (m,) = run.mounts
    assert m.target == "/dev/pipes/" and m.readonly
    mk = m.source.actions[0]
    assert mk.path == "/EOF" and mk.mode == 0o755 and mk.data.startswith(b"#!/usr/bin/env")
    res, _ = build("FROM alpine\nRUN <<A cat > /a && <<B cat > /b\na\nA\nb\nB\n")
    assert res.target.root.args == ("/bin/sh", "-c", "<<A cat > /a && <<B cat > /b\na\nA\nb\nB")


def test_proxy_args_in_run_env_not_in_history_nor_unused():
    res, _ = build("FROM alpine\nRUN true\n", build_args={"HTTP_PROXY": "http://p:3128"})
    run = res.target.root
    assert "HTTP_PROXY=http://p:3128" in run.proxy_env
    assert "http_proxy=http://p:3128" in run.proxy_env
    assert not any("PROXY" in e.upper() for e in run.env)
    assert created_by(res) == ["RUN /bin/sh -c true # buildkit"]
    assert res.unused_build_args == ()
    # an undeclared proxy changes neither the op's digest nor its definition
    other, _ = build("FROM alpine\nRUN true\n", build_args={"HTTP_PROXY": "http://q:1"})
    plain, _ = build("FROM alpine\nRUN true\n")
    assert run.digest == other.target.root.digest == plain.target.root.digest
    assert "proxy_env" not in run.definition()


def test_declared_proxy_arg_is_part_of_the_step():
    text = "FROM alpine\nARG HTTP_PROXY\nRUN true\n"
    res, _ = build(text, build_args={"HTTP_PROXY": "http://p:3128"})
    other, _ = build(text, build_args={"HTTP_PROXY": "http://q:1"})
    assert "HTTP_PROXY=http://p:3128" in res.target.root.env
    assert res.target.root.digest != other.target.root.digest
    assert created_by(res)[-1] == "RUN |1 HTTP_PROXY=http://p:3128 /bin/sh -c true # buildkit"


# --------------------------------------------------------------------------- ARG


def test_arg_scoping_global_needs_redeclaration():
    text = "ARG V=global\nFROM alpine\nRUN echo a\nARG V\nRUN echo b\n"
    res, _ = build(text)
    run_b = res.target.root
    run_a = run_b.root
    assert not any(e.startswith("V=") for e in run_a.env)
    assert "V=global" in run_b.env
    # BuildKit writes the value taken from the global scope into the ARG line
    assert created_by(res) == ["RUN /bin/sh -c echo a # buildkit", "ARG V=global",
                               "RUN |1 V=global /bin/sh -c echo b # buildkit"]


def test_arg_build_arg_overrides_default_and_history_lists_args():
    res, _ = build("FROM alpine\nARG A=1 B\nRUN x\n", build_args={"B": "two"})
    assert created_by(res) == ["ARG A=1 B=two", "RUN |2 A=1 B=two /bin/sh -c x # buildkit"]
    assert res.target.root.env[-2:] == ("A=1", "B=two")
    assert "A=1" not in res.target.config.env  # ARGs are not persisted


def test_arg_without_value_shows_empty_in_history():
    res, _ = build("FROM alpine\nARG X\nRUN y\n")
    assert created_by(res) == ["ARG X", "RUN |1 X= /bin/sh -c y # buildkit"]
    assert not any(e.startswith("X=") for e in res.target.root.env)


def test_env_overrides_arg_declared_before_it():
    res, _ = build("FROM alpine\nARG V=arg\nENV V=env\nRUN x\n", build_args={"V": "cli"})
    assert "V=env" in res.target.root.env and "V=cli" not in res.target.root.env
    assert created_by(res)[-1] == "RUN |1 V=env /bin/sh -c x # buildkit"


def test_unused_arg_does_not_change_digests():
    base = "FROM alpine\nRUN make\nCOPY . /src\n"
    d0 = build(base)[0].target.root.digest
    # an undeclared build arg, a global ARG never redeclared, and a stage ARG after the
    # last step change nothing
    assert build(base, build_args={"NOPE": "1"})[0].target.root.digest == d0
    assert build("ARG G=1\n" + base, build_args={"G": "2"})[0].target.root.digest == d0
    assert build(base + "ARG LATE=1\n", build_args={"LATE": "9"})[0].target.root.digest == d0
    # a declared ARG before a RUN does take part, as in BuildKit
    a = build("FROM alpine\nARG V\nRUN make\n", build_args={"V": "1"})[0].target.root.digest
    b = build("FROM alpine\nARG V\nRUN make\n", build_args={"V": "2"})[0].target.root.digest
    assert a != b


def test_unused_build_args_reported():
    res, _ = build("ARG USED\nFROM alpine\n", build_args={"USED": "1", "OTHER": "2",
                                                        "SOURCE_DATE_EPOCH": "10"})
    assert res.unused_build_args == ("OTHER",)


def test_automatic_platform_args():
    res, r = build("FROM --platform=$BUILDPLATFORM alpine\nARG TARGETARCH TARGETPLATFORM\n"
                   "RUN echo $TARGETARCH\n", platform="linux/arm64")
    assert r.calls[0][1].startswith("linux/")
    env = res.target.root.env
    assert "TARGETARCH=arm64" in env and "TARGETPLATFORM=linux/arm64" in env


# --------------------------------------------------------------------------- COPY / ADD


def test_copy_from_context_with_flags():
    res, _ = build("FROM alpine\nWORKDIR /app\nCOPY --chown=1:2 --chmod=755 --exclude=*.md "
                   "a b/ ./dst/\n", context_name="ctx")
    op = res.target.root
    (c,) = op.actions
    assert isinstance(c.source, graph.LocalSource) and c.source.name == "ctx"
    assert c.src == ("/a", "/b") and c.dest == "/app/dst/"
    assert (c.chown, c.chmod, c.exclude, c.dest_cwd) == ("1:2", "755", ("*.md",), "/app")
    assert not c.unpack_archives
    assert created_by(res)[-1] == "COPY --chown=1:2 --chmod=755 a b/ ./dst/ # buildkit"


def test_copy_expands_env_and_heredoc():
    res, _ = build("FROM alpine\nENV D=/etc N=world\nCOPY <<EOF ${D}/hello\nhi $N\nEOF\n"
                   "COPY <<'EOF' /raw\nhi $N\nEOF\n")
    raw = res.target.root
    expanded = raw.root
    src = expanded.actions[0].source
    assert expanded.actions[0].dest == "/etc/hello"
    assert src.actions[0].data == b"hi world\n"
    assert raw.actions[0].source.actions[0].data == b"hi $N\n"
    assert created_by(res)[1:] == ["COPY <<EOF ${D}/hello # buildkit".replace("${D}", "/etc"),
                                   "COPY <<EOF /raw # buildkit"]


def test_add_local_unpacks_and_copy_refuses_urls():
    res, _ = build("FROM alpine\nADD app.tar.gz /opt/\n")
    assert res.target.root.actions[0].unpack_archives
    assert created_by(res) == ["ADD app.tar.gz /opt/ # buildkit"]
    res, _ = build("FROM alpine\nADD --unpack=false app.tar.gz /opt/\n")
    assert not res.target.root.actions[0].unpack_archives
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nCOPY https://example.com/x /x\n")
    assert exc.value.message == "source can't be a URL for COPY"
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nCOPY https://example.com/r.git /x\n")
    assert exc.value.message == "source can't be a git ref for COPY"


def test_add_url_is_a_download_copied_to_dest():
    res, _ = build("FROM alpine\nADD --chmod=644 https://example.com/a/b.tar.gz?x=1 /opt/\n")
    (copy,) = res.target.root.actions
    assert isinstance(copy.source, graph.HttpSource)
    assert copy.source.url == "https://example.com/a/b.tar.gz?x=1"
    assert copy.source.filename == "b.tar.gz"
    assert copy.src == ("/b.tar.gz",) and copy.dest == "/opt/" and copy.chmod == "644"
    assert not copy.unpack_archives  # remote archives stay packed unless --unpack=true
    res, _ = build("FROM alpine\nADD --unpack=true https://example.com/ /x\n")
    assert res.target.root.actions[0].source.filename == "__unnamed__"
    assert res.target.root.actions[0].unpack_archives
    res, _ = build(f"FROM alpine\nADD --checksum=sha256:{'a' * 64} https://e.com/f /f\n")
    assert res.target.root.actions[0].source.checksum == "sha256:" + "a" * 64
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nADD --checksum=md5:00 https://e.com/f /f\n")
    assert "invalid checksum" in exc.value.message
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nADD https://e.com/f local /f\n")
    assert "must be a directory" in exc.value.message


def test_add_git_is_a_checkout_copied_into_dest():
    res, _ = build("FROM alpine\nADD --keep-git-dir --checksum=abc123 "
                   "https://h.example/r.git#v1:sub/dir /src\n")
    (copy,) = res.target.root.actions
    src = copy.source
    assert isinstance(src, graph.GitSource)
    assert (src.remote, src.ref, src.keep_git_dir, src.checksum) == (
        "https://h.example/r.git", "v1", True, "abc123")
    assert copy.src == ("/sub/dir",) and copy.dir_contents_only and copy.dest == "/src"
    res, _ = build("FROM alpine\nADD git@github.com:moby/buildkit.git?branch=b /src/\n")
    src = res.target.root.actions[0].source
    assert (src.remote, src.ref, src.keep_git_dir) == (
        "git@github.com:moby/buildkit.git", "refs/heads/b", False)
    # the github.com/ shorthand is also a valid path: ADD treats it as local
    res, _ = build("FROM alpine\nADD github.com/moby/buildkit /src/\n")
    assert isinstance(res.target.root.actions[0].source, graph.LocalSource)


def test_maintainer_sets_author_and_stages_inherit_it():
    res, _ = build("FROM alpine AS a\nMAINTAINER Jane <j@example.com>\nFROM a\nRUN x\n")
    assert res.target.author == "Jane <j@example.com>"
    assert created_by(res)[0] == "MAINTAINER Jane <j@example.com>"


def test_copy_bad_chmod():
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\nCOPY --chmod=99999 a /b\n")
    assert "invalid chmod parameter" in exc.value.message


# --------------------------------------------------------------------------- WORKDIR, config


def test_workdir_relative_joins_and_makes_dir_with_user():
    res, _ = build("FROM alpine\nUSER 1000\nWORKDIR app\nWORKDIR ../lib\nWORKDIR /\n")
    t = res.target
    assert t.config.working_dir == "/"
    assert created_by(res) == ["USER 1000", "WORKDIR /srv/app", "WORKDIR /srv/lib", "WORKDIR /"]
    mk2 = t.root
    mk1 = mk2.root
    assert mk1.actions[0] == graph.Mkdir("/srv/app", 0o755, True, "1000")
    assert mk2.actions[0].path == "/srv/lib"
    assert t.history[3].op is None  # WORKDIR / makes no layer


def test_metadata_instructions_config_and_history():
    text = ("FROM scratch\nENV A=1 B=\"x y\"\nENV C=$A\nLABEL a=b \"c d\"=e\nEXPOSE 80 53/udp\n"
            "VOLUME /data /logs\nSTOPSIGNAL SIGTERM\nUSER app:grp\nMAINTAINER me\n"
            "HEALTHCHECK --interval=30s --retries=3 CMD [\"curl\", \"-f\", \"x\"]\n"
            "ONBUILD RUN echo child\nCMD [\"run\"]\n")
    res, _ = build(text)
    c = res.target.config
    assert c.env == ("PATH=" + DEFAULT_PATH, "A=1", "B=x y", "C=1")
    assert dict(c.labels) == {"a": "b", "c d": "e"}
    assert c.exposed_ports == ("53/udp", "80/tcp")
    assert c.volumes == ("/data", "/logs")
    assert c.stop_signal == "SIGTERM" and c.user == "app:grp"
    assert c.healthcheck == graph.Healthcheck(("CMD", "curl", "-f", "x"), 30_000_000_000, 0, 0, 0, 3)
    assert c.on_build == ("RUN echo child",)
    assert c.cmd == ("run",)
    assert created_by(res) == [
        "ENV A=1 B=x y", "ENV C=1", "LABEL a=b c d=e", "EXPOSE [53/udp 80/tcp]",
        "VOLUME [/data /logs]", "STOPSIGNAL SIGTERM", "USER app:grp", "MAINTAINER me",
        "HEALTHCHECK {Test:[CMD curl -f x] Interval:30s Timeout:0s StartPeriod:0s "
        "StartInterval:0s Retries:3}",
        'CMD ["run"]']
    assert all(h.op is None for h in res.target.history)
    assert all(h.comment == "buildkit.dockerfile.v0" for h in res.target.history)


def test_entrypoint_resets_inherited_cmd_but_not_own():
    res, _ = build("FROM alpine\nENTRYPOINT [\"/app\"]\n")
    assert res.target.config.cmd is None and res.target.config.entrypoint == ("/app",)
    res, _ = build("FROM alpine\nCMD [\"x\"]\nENTRYPOINT /app run\n")
    assert res.target.config.cmd == ("x",)
    assert res.target.config.entrypoint == ("/bin/sh", "-c", "/app run")
    assert created_by(res)[-1] == 'ENTRYPOINT ["/bin/sh" "-c" "/app run"]'


def test_env_whole_instruction_sees_old_values():
    res, _ = build("FROM scratch\nENV A=1\nENV A=2 B=$A\n")
    assert "B=1" in res.target.config.env and "A=2" in res.target.config.env


def test_expose_bad_port():
    with pytest.raises(DockerfileError) as exc:
        build("FROM scratch\nEXPOSE 80/xyz\n")
    assert "invalid proto" in exc.value.message and exc.value.line == 2


# --------------------------------------------------------------------------- ONBUILD


def test_onbuild_triggers_from_base_image_run_first():
    onbuild_img = graph.ImageConfig(env=("PATH=/bin",), on_build=("RUN echo trig", "ENV T=1"))
    res, _ = build("FROM withtriggers\nRUN echo mine\n",
                   resolver=FakeResolver(configs={"withtriggers": onbuild_img}))
    assert created_by(res) == ["RUN /bin/sh -c echo trig # buildkit", "ENV T=1",
                               "RUN /bin/sh -c echo mine # buildkit"]
    assert res.target.config.on_build == ()


def test_onbuild_from_stage_and_trigger_with_copy_from():
    text = ("FROM alpine AS assets\nRUN build\nFROM alpine AS tmpl\nONBUILD COPY --from=assets /a /a\n"
            "FROM tmpl\nRUN ls /a\n")
    res, r = build(text)
    assert created_by(res)[-2:] == ["COPY /a /a # buildkit", "RUN /bin/sh -c ls /a # buildkit"]
    copy = res.target.root.root
    assert isinstance(copy.actions[0].source, graph.Exec)


# --------------------------------------------------------------------------- errors


def test_unknown_instruction_with_line_and_suggestion():
    with pytest.raises(DockerfileError) as exc:
        build("FROM alpine\n\nRUNN echo\n")
    e = exc.value
    assert e.message == "unknown instruction: RUNN (did you mean run?)"
    assert e.line == 3 and e.source_lines == ("RUNN echo",)
    assert str(e) == "Dockerfile:3: unknown instruction: RUNN (did you mean run?)"


def test_instruction_before_from_and_empty_file():
    with pytest.raises(DockerfileError) as exc:
        build("RUN x\nFROM alpine\n")
    assert exc.value.message == "no build stage in current context" and exc.value.line == 1
    with pytest.raises(DockerfileError):
        build("")


def test_bad_flags_and_arg_counts():
    cases = {
        "FROM alpine\nCOPY --fro=x a b\n": "unknown flag: --fro",
        "FROM alpine\nCOPY --from=a --from=b a b\n": "duplicate flag specified: --from",
        "FROM alpine\nCOPY a\n": "COPY requires at least two arguments, but only one was "
                                 "provided. Destination could not be determined",
        "FROM a b\n": "FROM requires either one or three arguments",
        "FROM alpine AS 1x\n": 'invalid name for build stage: "1x", name can\'t start with a '
                               "number or contain symbols",
        "FROM alpine\nSHELL sh -c\n": "SHELL requires the arguments to be in JSON form",
        "FROM \"\"\n": 'base name ("") should not be blank',
        "FROM alpine\nSTOPSIGNAL SIGNOPE\n": "Invalid signal: SIGNOPE",
        "FROM alpine\nHEALTHCHECK --retries=-1 CMD x\n": "--retries cannot be negative (-1)",
    }
    for text, msg in cases.items():
        with pytest.raises(DockerfileError) as exc:
            build(text)
        assert exc.value.message == msg, text


def test_expansion_error_is_located():
    with pytest.raises(DockerfileError) as exc:
        build('FROM alpine\nENV A="${B:?must be set}"\n')
    assert exc.value.line == 2 and "must be set" in exc.value.message


# --------------------------------------------------------------------------- instructions API


def test_go_duration_round_trip():
    for text, ns in (("1s", 10**9), ("100ms", 10**8), ("1m30s", 90 * 10**9),
                     ("1.5h", 5400 * 10**9), ("0", 0)):
        assert ins.parse_go_duration(text) == ns
    assert ins.format_go_duration(90 * 10**9) == "1m30s"
    assert ins.format_go_duration(3600 * 10**9) == "1h0m0s"
    assert ins.format_go_duration(1_500_000_000) == "1.5s"
    assert ins.format_go_duration(0) == "0s"


def test_run_network_default_means_global():
    res, _ = build("FROM alpine\nRUN --network=default true\n", network="none")
    assert res.target.root.network == "none"


def test_parser_warnings_are_passed_on():
    res, _ = build("FROM alpine\nRUN a \\\n\n  b\n")
    assert any("line" in w for w in res.warnings)


def test_duplicate_stage_names_last_wins_for_lookups():
    res, r = build("FROM alpine AS x\nFROM debian AS x\nFROM scratch\nCOPY --from=x / /\n")
    assert isinstance(res.target.root.actions[0].source, graph.ImageSource)
    assert [c[0] for c in r.calls] == ["debian"]


def test_platform_errors_suggest_args():
    with pytest.raises(DockerfileError) as exc:
        build("FROM --platform=$BULIDPLATFORM scratch\n")
    assert exc.value.message == ("empty platform value from expression $BULIDPLATFORM "
                                 "(did you mean BUILDPLATFORM?)")
    with pytest.raises(DockerfileError) as exc:
        build("ARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\n")
    assert exc.value.message == (
        'failed to parse platform linux/${MYARCH}: "" is an invalid component of "linux/": '
        'platform specifier component must match "^[A-Za-z0-9_.-]+$": invalid argument '
        "(did you mean MY_ARCH?)")


def test_arg_declared_after_env_wins_in_run_env_like_buildkit():
    # BuildKit adds ARG values to the build state's env, so an ARG declared after an ENV
    # (or an inherited ENV) of the same name is what RUN sees; the image keeps the ENV.
    res, _ = build("FROM alpine\nENV LANG=env\nARG LANG=arg\nRUN x\n")
    assert "LANG=arg" in res.target.root.env
    assert "LANG=env" in res.target.config.env


def test_run_env_order_follows_buildkit_envlist():
    res, _ = build("FROM scratch\nENV A=1 B=2\nENV A=3\nRUN x\n")
    assert res.target.root.env[1:] == ("B=2", "A=3")
    assert res.target.config.env[1:] == ("A=3", "B=2")  # the image keeps first positions


def test_copy_from_scratch_is_the_empty_source():
    res, r = build("FROM alpine\nCOPY --from=scratch / /\n")
    assert isinstance(res.target.root.actions[0].source, graph.Scratch)
    assert [c[0] for c in r.calls] == ["alpine"]
