"""The Dockerfile compiler: stages of typed instructions -> the pybuild graph IR.

`compile_dockerfile` is a pure function (BuildKit's dockerfile2llb): Dockerfile text,
build args, target and platform in; an `ImageTarget` (root op, image config, history)
out. The only thing it asks the outside world is a base image's config, through the
`ImageResolver` it is given, and only for stages the target needs.

Semantics follow BuildKit's frontend (1.26): stage resolution by name or index, global
ARGs usable in FROM, ARG scoping per stage, ENV/ARG expansion in the instructions BuildKit
expands, ONBUILD triggers, history text, and cache-friendly ops (an ARG no step uses
changes no op digest).
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from frontends.dockerfile import instructions as ins
from frontends.dockerfile.gopath import go_clean
from frontends.dockerfile.history import (HISTORY_COMMENT, copy_created_by,
                                          go_q_list, go_v_list, healthcheck_created_by,
                                          run_created_by)
from frontends.dockerfile.parser import DockerfileError, Node, parse
from frontends.dockerfile.shell import ShellExpansionError, ShellLexer
from pybuild import graph
from pybuild.errors import DefinitionError

__all__ = ["CompileResult", "compile_dockerfile", "stage_names", "DEFAULT_SHELL",
           "DEFAULT_PATH", "proxy_env_from_build_args", "resolve_source_date_epoch",
           "source_only_stage_filename"]

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SCRATCH = "scratch"

_PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
_PLATFORM_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
                  "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH",
                  "TARGETVARIANT", "TARGETSTAGE")
# ARGs that configure the builder and never become RUN environment
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_SIGNALS = frozenset("""ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF
PWR QUIT SEGV STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ
UNUSED""".split())


@dataclass(frozen=True)
class CompileResult:
    """A compiled Dockerfile: the image target, warnings, build args nothing used, and the
    steps each stage made."""

    target: graph.ImageTarget
    warnings: tuple[str, ...]
    unused_build_args: tuple[str, ...]
    # (stage name or index, digests of the steps its own instructions made): what
    # `--no-cache-filter STAGE` re-runs
    stage_ops: tuple[tuple[str, tuple[str, ...]], ...] = ()


# --------------------------------------------------------------------------- stage state


@dataclass(eq=False)
class _Stage:
    """One stage while compiling (mutable scratch state; never leaves this module)."""

    index: int
    name: str  # lowercased AS name, "" if none
    base_name: str  # FROM word after global-ARG expansion
    platform: str  # --platform after expansion, "" = the target platform
    node: Optional[Node]
    commands: list = field(default_factory=list)
    base: Optional["_Stage"] = None
    deps: dict = field(default_factory=dict)  # id(stage) -> stage
    unregistered: bool = False  # an image named by COPY --from / --mount from=
    # filled by resolution
    resolved: bool = False
    onbuild_done: bool = False
    root: graph.Op = field(default_factory=graph.Scratch)
    config: graph.ImageConfig = field(default_factory=graph.ImageConfig)
    base_image: Optional[graph.ImageSource] = None
    # filled by dispatch
    dispatched: bool = False
    env: dict = field(default_factory=dict)  # the build-time env (ENV + ARG values in scope)
    build_args: list = field(default_factory=list)  # declared ARGs: (key, value|None)
    history: list = field(default_factory=list)
    cmd_set: bool = False
    author: str = ""  # MAINTAINER

    @property
    def display_name(self) -> str:
        return self.name or f"stage-{self.index}"


class _Compiler:
    def __init__(self, text: str, resolver: graph.ImageResolver, filename: str,
                 build_args: Mapping[str, str], target: Optional[str], platform: str,
                 network: str, context_name: str):
        self.text = text
        self.resolver = resolver
        self.filename = filename
        self.build_args = dict(build_args)
        self.target_name = target
        self.platform = platform
        self.network = network
        self.context = graph.LocalSource(context_name)
        self.warnings: list[str] = []
        self.stages: list[_Stage] = []
        self.stage_ops: list[tuple[str, tuple[str, ...]]] = []
        self.extra_sources: list[_Stage] = []
        self.lines: tuple[str, ...] = ()
        self.lexer = ShellLexer()
        self.raw_lexer = ShellLexer(skip_process_quotes=True)
        self.global_args: dict[str, str] = {}
        self.declared_args: set[str] = set()
        self.resolve_cache: dict[tuple[str, str], graph.ResolvedImage] = {}
        self.proxy_env = proxy_env_from_build_args(self.build_args)

    # ------------------------------------------------------------------ errors

    def error(self, message: str, node: Optional[Node] = None) -> DockerfileError:
        if node is None or node.start_line <= 0:
            return DockerfileError(message, filename=self.filename)
        lines = self.lines[node.start_line - 1:max(node.end_line, node.start_line)]
        return DockerfileError(message, filename=self.filename, line=node.start_line,
                               source_lines=tuple(lines))

    # ------------------------------------------------------------------ phases

    def run(self) -> CompileResult:
        if not self.text:
            raise DockerfileError("the Dockerfile cannot be empty", filename=self.filename)
        parsed = parse(self.text, self.filename)
        self.lines = tuple(parsed.lines)
        self.lexer = ShellLexer(parsed.escape_token)
        self.warnings.extend(_warning_text(w) for w in parsed.warnings)
        meta_args = self.parse_stages(parsed.nodes)
        if not self.stages:
            raise DockerfileError("dockerfile contains no stages to build", filename=self.filename)
        target = self.find_target()
        self.global_args = self.default_args(target)
        self.build_meta_args(meta_args)
        self.check_source_date_epoch()
        self.init_stages()
        self.build_dependency_graph()
        reachable = self.resolve_stages(target)
        self.dispatch_stages(reachable)
        return self.result(target)

    def parse_stages(self, nodes) -> list[ins.Arg]:
        meta: list[ins.Arg] = []
        for node in nodes:
            cmd = ins.parse_instruction(node, self.filename, self.lines)
            if isinstance(cmd, ins.From):
                self.stages.append(_Stage(len(self.stages), cmd.stage_name, cmd.base_name,
                                          cmd.platform, node))
            elif not self.stages:
                if not isinstance(cmd, ins.Arg):
                    raise self.error("no build stage in current context", node)
                meta.append(cmd)
                self.declared_args.update(a.key for a in cmd.args)
            else:
                self.stages[-1].commands.append(cmd)
                if isinstance(cmd, ins.Arg):
                    self.declared_args.update(a.key for a in cmd.args)
        return meta

    def find_target(self) -> _Stage:
        if not self.target_name:
            return self.stages[-1]
        st = self.find_stage(self.target_name)
        if st is not None:
            return st
        names = [s.name for s in self.stages if s.name]
        msg = ins.with_suggestion(f'target stage "{self.target_name}" could not be found',
                                  self.target_name, names, True)
        raise DockerfileError(msg, filename=self.filename)

    def default_args(self, target: _Stage) -> dict[str, str]:
        tos, tarch, tvar = _split_platform(self.platform)
        bos, barch, bvar = _split_platform(_host_platform())
        values = {
            "BUILDPLATFORM": f"{bos}/{barch}", "BUILDOS": bos, "BUILDOSVERSION": "",
            "BUILDARCH": barch, "BUILDVARIANT": bvar,
            "TARGETPLATFORM": "/".join(p for p in (tos, tarch, tvar) if p),
            "TARGETOS": tos, "TARGETOSVERSION": "", "TARGETARCH": tarch, "TARGETVARIANT": tvar,
            "TARGETSTAGE": target.name,
        }
        for k in values:
            if k in self.build_args:
                values[k] = self.build_args[k]
        return values

    def build_meta_args(self, meta_args: list[ins.Arg]) -> None:
        for cmd in meta_args:
            for a in cmd.args:
                if a.key in self.build_args:
                    self.global_args[a.key] = self.build_args[a.key]
                elif a.value is not None:
                    self.global_args[a.key] = self.expand(a.value, self.global_args, cmd.node)

    def check_source_date_epoch(self) -> None:
        value = self.build_args.get("SOURCE_DATE_EPOCH")
        if value is None:
            value = self.global_args.get("SOURCE_DATE_EPOCH") or None
        if value is None:
            return
        try:
            resolve_source_date_epoch(value)
            return
        except DefinitionError:
            stage = self.find_stage(value)
            if stage is None:
                raise DockerfileError(f"invalid SOURCE_DATE_EPOCH: {value}",
                                      filename=self.filename) from None
        self.source_only_url(stage)
        # The stage is valid, but its time (the download's Last-Modified) is only known
        # at solve time, and the image config is assembled from compile-time values.
        raise self.error(f"SOURCE_DATE_EPOCH from stage {value!r} is not supported yet "
                         "(use a number of seconds)", stage.node)

    def source_only_url(self, st: _Stage) -> str:
        """The URL of a "source-only" stage (FROM scratch, ARGs, one ADD of one remote
        source), as BuildKit allows for SOURCE_DATE_EPOCH=<stage>."""
        if st.base_name.strip() != SCRATCH:
            raise self.error("SOURCE_DATE_EPOCH stage must use FROM scratch", st.node)
        env: dict[str, str] = {}
        adds = []
        for cmd in st.commands:
            if isinstance(cmd, ins.Arg):
                for a in cmd.args:
                    if a.key in self.build_args:
                        env[a.key] = self.build_args[a.key]
                    elif a.value is not None:
                        env[a.key] = self.expand(a.value, env, cmd.node)
                    elif a.key in self.global_args:
                        env[a.key] = self.global_args[a.key]
            elif isinstance(cmd, ins.Add):
                adds.append(cmd)
            else:
                adds = []
                break
        if len(adds) == 1 and len(adds[0].sources) == 1 and not adds[0].contents:
            url = self.expand(adds[0].sources[0], env, adds[0].node)
            if url.startswith(("http://", "https://")) and not _is_git(url):
                return url
        raise self.error("SOURCE_DATE_EPOCH stage does not meet source-only requirements: "
                         "it must be FROM scratch with a single ADD of one HTTP(S) source",
                         st.node)

    def init_stages(self) -> None:
        by_name: dict[str, _Stage] = {}
        for st in self.stages:
            base = self.expand_matches(st.base_name, self.global_args, st.node)
            if base == "":
                raise self.error(f"base name ({st.base_name}) should not be blank", st.node)
            st.base_name = base
            if st.platform:
                plat, _, unmatched = self.wrap(lambda: self.lexer.process_word_with_matches(
                    st.platform, self.global_args), st.node)
                problem = from_platform_error(st.platform, plat, unmatched, self.global_args)
                if problem:
                    raise self.error(problem, st.node)
                st.platform = plat
            st.base = by_name.get(base.lower())
            if st.name:
                by_name[st.name] = st

    def find_stage(self, name: str) -> Optional[_Stage]:
        """The stage of that name (case-insensitive); with duplicate names the last one
        wins, as in BuildKit's name map."""
        low = name.lower()
        for st in reversed(self.stages):
            if st.name and st.name == low:
                return st
        return None

    def source_stage(self, ref: str, cmd, allow_index: bool) -> _Stage:
        st = None
        if allow_index and re.fullmatch(r"[+-]?\d+", ref):
            i = int(ref)
            if i < 0 or i >= len(self.stages):
                raise self.error(f"invalid stage index {i}", cmd.node)
            return self.stages[i]
        st = self.find_stage(ref)
        if st is not None:
            return st
        for ex in self.extra_sources:
            if ex.base_name == ref:
                return ex
        ex = _Stage(-1, "", ref, "", cmd.node, unregistered=True)
        self.extra_sources.append(ex)
        return ex

    def dispatched_source(self, st: _Stage, ref: str, cmd, allow_index: bool,
                          verb: str) -> graph.Op:
        """The root op of the stage (or image) `ref` that `cmd` in `st` takes files from;
        a stage defined further down is an error (BuildKit's wording, `verb` "copy" or
        "mount")."""
        src = self.source_stage(ref, cmd, allow_index)
        if not src.dispatched:
            raise self.error(f'cannot {verb} from stage "{ref}", it needs to be defined '
                             f'before current stage "{st.display_name}"', cmd.node)
        return src.root

    def command_sources(self, cmd) -> list[_Stage]:
        out: list[_Stage] = []
        if isinstance(cmd, ins.Copy) and cmd.from_:
            expanded = self.expand(cmd.from_, {}, cmd.node)
            if expanded != cmd.from_:
                raise self.error("variable expansion is not supported for --from, define a new "
                                 "stage with FROM using ARG from global scope as a workaround",
                                 cmd.node)
            out.append(self.source_stage(cmd.from_, cmd, True))
        if isinstance(cmd, ins.Run):
            for spec in cmd.mounts:
                m = self.wrap(lambda: ins.parse_mount(spec, None), cmd.node)
                if m.from_:
                    out.append(self.source_stage(m.from_, cmd, False))
        return out

    def build_dependency_graph(self) -> None:
        for st in self.stages:
            for cmd in st.commands:
                for src in self.command_sources(cmd):
                    st.deps[id(src)] = src
        self.check_cycles()

    def check_cycles(self) -> None:
        visited: set[int] = set()

        def visit(st: _Stage, path: set[int]) -> bool:
            if id(st) in visited:
                return True
            visited.add(id(st))
            path.add(id(st))
            for dep in st.deps.values():
                if id(dep) in path or not visit(dep, path):
                    return False
            path.discard(id(st))
            return True

        for st in self.stages:
            if not visit(st, set()):
                raise DockerfileError(f"circular dependency detected on stage: {st.display_name}",
                                      filename=self.filename)

    def reachable_from(self, target: _Stage) -> list[_Stage]:
        seen: dict[int, _Stage] = {}

        def add(st: _Stage) -> None:
            if id(st) in seen:
                return
            seen[id(st)] = st
            if st.base is not None:
                add(st.base)
            for d in st.deps.values():
                add(d)

        add(target)
        order = [s for s in self.stages if id(s) in seen]
        order += [s for s in self.extra_sources if id(s) in seen]
        return order

    def resolve_stages(self, target: _Stage) -> list[_Stage]:
        while True:
            reachable = self.reachable_from(target)
            for st in reachable:
                if st.base is None and not st.resolved:
                    self.resolve_base(st)
            new_deps = False
            for st in reachable:
                if st.unregistered or st.onbuild_done:
                    continue
                st.onbuild_done = True
                if st.base is not None:
                    triggers = [c.expression for c in st.base.commands
                                if isinstance(c, ins.Onbuild)]
                else:
                    triggers = list(st.config.on_build)
                    st.config = dataclasses.replace(st.config, on_build=())
                if triggers and self.init_onbuild(st, triggers):
                    new_deps = True
            if not new_deps:
                return reachable

    def resolve_base(self, st: _Stage) -> None:
        st.resolved = True
        if st.base_name == SCRATCH:
            st.root = graph.Scratch()
            st.config = graph.ImageConfig()
            st.dispatched = st.dispatched or st.unregistered
            return
        platform = st.platform or self.platform
        key = (st.base_name, platform)
        resolved = self.resolve_cache.get(key)
        if resolved is None:
            resolved = self.resolver.resolve(st.base_name, platform)
            self.resolve_cache[key] = resolved
        src = graph.ImageSource(ref=resolved.ref or st.base_name,
                                manifest_digest=resolved.manifest_digest,
                                platform=resolved.platform or platform)
        st.root = src
        st.base_image = src
        st.config = resolved.config
        if st.unregistered:
            st.dispatched = True

    def init_onbuild(self, st: _Stage, triggers: list[str]) -> bool:
        new_cmds = []
        has_deps = False
        for trig in triggers:
            try:
                parsed = parse(trig, self.filename)
            except DefinitionError as e:
                raise self.error(e.message, st.node) from None
            if len(parsed.nodes) != 1:
                raise self.error("onbuild trigger should be a single expression", st.node)
            node = dataclasses.replace(parsed.nodes[0],
                                       start_line=st.node.start_line if st.node else 0,
                                       end_line=st.node.end_line if st.node else 0)
            cmd = ins.parse_instruction(node, self.filename, self.lines)
            if isinstance(cmd, ins.From):
                raise self.error("FROM isn't allowed as an ONBUILD trigger", st.node)
            for src in self.command_sources(cmd):
                st.deps[id(src)] = src
                has_deps = True
            new_cmds.append(cmd)
        st.commands = new_cmds + st.commands
        if has_deps:
            self.check_cycles()
        return has_deps

    # ------------------------------------------------------------------ dispatch

    def dispatch_stages(self, reachable: list[_Stage]) -> None:
        wanted = {id(s) for s in reachable}
        for st in self.stages:
            if id(st) not in wanted or st.dispatched:
                continue
            self.init_stage(st)
            st.dispatched = True
            made = []
            for cmd in st.commands:
                before = st.root
                self.dispatch(st, cmd)
                if st.root is not before:
                    made.append(st.root.digest)
                    # COPY --link: the linked copy is the stage's step (--no-cache-filter)
                    made.extend(u.digest for u in getattr(st.root, "upper", ()))
            self.stage_ops.append((st.name or str(st.index), tuple(made)))

    def init_stage(self, st: _Stage) -> None:
        if st.base is not None:
            b = st.base
            st.root = b.root
            st.platform = st.platform or b.platform
            st.config = dataclasses.replace(b.config, on_build=())
            st.base_image = b.base_image
            st.history = list(b.history)
            st.build_args = list(b.build_args)
            st.env = dict(b.env)
            st.author = b.author
            return
        if "PATH" not in st.config.env_dict():
            st.config = st.config.with_env("PATH", DEFAULT_PATH)
        for item in st.config.env:
            k, _, v = item.partition("=")
            _add_env(st.env, k, v)
        if st.config.working_dir:
            st.config = dataclasses.replace(st.config,
                                            working_dir=_normalize_workdir("", st.config.working_dir))

    def dispatch(self, st: _Stage, cmd) -> None:
        handler = getattr(self, "d_" + type(cmd).__name__.lower())
        handler(st, cmd)

    # helpers ------------------------------------------------------------

    def wrap(self, fn, node: Optional[Node]):
        try:
            return fn()
        except ShellExpansionError as e:
            raise self.error(str(e), node) from None
        except ins.FlagError as e:
            raise self.error(str(e), node) from None

    def expand(self, word: str, env: Mapping[str, str], node: Optional[Node]) -> str:
        return self.wrap(lambda: self.lexer.process_word(word, env), node)

    def expand_matches(self, word: str, env: Mapping[str, str], node: Optional[Node]) -> str:
        return self.wrap(lambda: self.lexer.process_word_with_matches(word, env)[0], node)

    def commit(self, st: _Stage, created_by: str, op: Optional[graph.Op] = None) -> None:
        st.history.append(graph.HistoryStep(created_by=created_by, op=op,
                                            comment=HISTORY_COMMENT))

    def workdir(self, st: _Stage) -> str:
        return st.config.working_dir or "/"

    def with_shell(self, st: _Stage, args) -> tuple[str, ...]:
        shell = st.config.shell if st.config.shell else DEFAULT_SHELL
        return tuple(shell) + (" ".join(args),)

    def describe(self, st: _Stage, cmd) -> str:
        text = (cmd.original or "").strip()
        lex = ShellLexer(self.lexer.escape_token, raw_quotes=True, skip_unset_env=True)
        try:
            text = lex.process_word(text, st.env)
        except ShellExpansionError:
            pass
        word, sep, rest = text.partition(" ")
        return word.upper() + sep + rest

    # instructions ---------------------------------------------------------

    def d_env(self, st: _Stage, cmd: ins.Env) -> None:
        pairs = [(self.expand(p.key, st.env, cmd.node), self.expand(p.value, st.env, cmd.node))
                 for p in cmd.pairs]
        msg = "ENV"
        for k, v in pairs:
            msg += f" {k}={v}"
            _add_env(st.env, k, v)
            st.config = st.config.with_env(k, v)
        self.commit(st, msg)

    def d_label(self, st: _Stage, cmd: ins.Label) -> None:
        pairs = [(self.expand(p.key, st.env, cmd.node), self.expand(p.value, st.env, cmd.node))
                 for p in cmd.pairs]
        msg = "LABEL"
        for k, v in pairs:
            st.config = st.config.with_label(k, v)
            msg += f" {k}={v}"
        self.commit(st, msg)

    def d_maintainer(self, st: _Stage, cmd: ins.Maintainer) -> None:
        st.author = cmd.maintainer  # the image config's `author`, as BuildKit sets it
        self.commit(st, f"MAINTAINER {cmd.maintainer}")

    def d_arg(self, st: _Stage, cmd: ins.Arg) -> None:
        parts = []
        for a in cmd.args:
            value = a.value
            has_value = a.key in self.build_args
            if value is None and not has_value and a.key in self.global_args:
                value = self.global_args[a.key]
            elif has_value:
                value = self.build_args[a.key]
            elif value is not None:
                value = self.expand(value, st.env, cmd.node)
            if value is not None and a.key not in _NON_ENV_ARGS:
                _add_env(st.env, a.key, value)
            st.build_args.append((a.key, value))
            parts.append(a.key if value is None else f"{a.key}={value}")
        self.commit(st, "ARG " + " ".join(parts))

    def d_workdir(self, st: _Stage, cmd: ins.Workdir) -> None:
        path = self.expand(cmd.path, st.env, cmd.node)
        if not path:
            raise self.error("normalizing workdir: cannot normalize nothing", cmd.node)
        wd = _normalize_workdir(st.config.working_dir, path)
        st.config = dataclasses.replace(st.config, working_dir=wd)
        op = None
        if wd != "/":
            op = graph.FileOp(root=st.root, actions=(graph.Mkdir(wd, 0o755, True,
                                                                 st.config.user),),
                              description=self.describe(st, cmd))
            st.root = op
        self.commit(st, f"WORKDIR {wd}", op)

    def d_user(self, st: _Stage, cmd: ins.User) -> None:
        user = self.expand(cmd.user, st.env, cmd.node)
        st.config = dataclasses.replace(st.config, user=user)
        self.commit(st, f"USER {user}")

    def d_volume(self, st: _Stage, cmd: ins.Volume) -> None:
        vols = [self.expand(v, st.env, cmd.node) for v in cmd.volumes]
        for v in vols:
            if not v:
                raise self.error("VOLUME specified can not be an empty string", cmd.node)
        st.config = dataclasses.replace(st.config,
                                        volumes=tuple(sorted(set(st.config.volumes) | set(vols))))
        self.commit(st, f"VOLUME {go_v_list(vols)}")

    def d_stopsignal(self, st: _Stage, cmd: ins.Stopsignal) -> None:
        sig = self.expand(cmd.signal, st.env, cmd.node)
        if not _valid_signal(sig):
            raise self.error(f"Invalid signal: {sig}", cmd.node)
        st.config = dataclasses.replace(st.config, stop_signal=sig)
        self.commit(st, f"STOPSIGNAL {sig}")

    def d_shell(self, st: _Stage, cmd: ins.Shell) -> None:
        st.config = dataclasses.replace(st.config, shell=tuple(cmd.shell))
        self.commit(st, f"SHELL {go_v_list(cmd.shell)}")

    def d_cmd(self, st: _Stage, cmd: ins.Cmd) -> None:
        args = tuple(cmd.cmd_line)
        if cmd.prepend_shell:
            args = self.with_shell(st, args)
        st.cmd_set = True
        st.config = dataclasses.replace(st.config, cmd=args, args_escaped=True)
        self.commit(st, f"CMD {go_q_list(args)}")

    def d_entrypoint(self, st: _Stage, cmd: ins.Entrypoint) -> None:
        args = tuple(cmd.cmd_line) if cmd.cmd_line is not None else None
        if cmd.prepend_shell and args is not None:
            args = self.with_shell(st, args)
        elif cmd.prepend_shell:
            args = self.with_shell(st, ())
        changes = {"entrypoint": args}
        if not st.cmd_set:
            changes["cmd"] = None
        st.config = dataclasses.replace(st.config, **changes)
        self.commit(st, f"ENTRYPOINT {go_q_list(args)}")

    def d_healthcheck(self, st: _Stage, cmd: ins.Healthcheck) -> None:
        st.config = dataclasses.replace(st.config, healthcheck=cmd.health)
        self.commit(st, healthcheck_created_by(cmd.health))

    def d_expose(self, st: _Stage, cmd: ins.Expose) -> None:
        words: list[str] = []
        for p in cmd.ports:
            words.extend(self.wrap(lambda p=p: self.lexer.process_words(p, st.env), cmd.node))
        ports = self.wrap(lambda: ins.parse_port_specs(words), cmd.node)
        st.config = dataclasses.replace(
            st.config, exposed_ports=tuple(sorted(set(st.config.exposed_ports) | set(ports))))
        self.commit(st, f"EXPOSE {go_v_list(ports)}")

    def d_onbuild(self, st: _Stage, cmd: ins.Onbuild) -> None:
        # BuildKit records the trigger in the config and writes no history line.
        st.config = dataclasses.replace(st.config, on_build=st.config.on_build + (cmd.expression,))

    def d_run(self, st: _Stage, cmd: ins.Run) -> None:
        args = tuple(cmd.cmd_line)
        mounts: list[graph.Mount] = []
        description = self.describe(st, cmd)
        if cmd.files:
            if len(args) != 1 or not cmd.prepend_shell:
                raise self.error(f"parsing produced an invalid run command: {go_v_list(args)}",
                                 cmd.node)
            hd = ins.parse_heredoc_word(args[0])
            if hd is not None:
                first = cmd.files[0]
                data = ins.chomp_heredoc(first.data) if first.chomp else first.data
                if data.startswith("#!"):
                    # a script with its own interpreter: mount it and run it as a file
                    script = graph.FileOp(root=graph.Scratch(), actions=(
                        graph.Mkfile("/" + first.name, data.encode(), 0o755),),
                        description="preparing inline document")
                    mounts.append(graph.Mount(target="/dev/pipes/", type="bind", source=script,
                                              selector="/", readonly=True))
                    args = ("/dev/pipes/" + first.name,)
                else:
                    args = (data,)
                description += f" ({_summarize_heredoc(first.data)})"
            else:
                text = args[0]
                for f in cmd.files:
                    text += "\n" + f.data + f.name
                args = (text,)
        if cmd.prepend_shell:
            args = self.with_shell(st, args)
        for spec in cmd.mounts:
            mounts.append(self.run_mount(st, cmd, spec, len(mounts)))
        env = tuple(f"{k}={v}" for k, v in st.env.items())
        # undeclared proxy args reach the process but not the digest (BuildKit's ProxyEnv)
        op = graph.Exec(root=st.root, args=args, env=env, user=st.config.user,
                        cwd=self.workdir(st), proxy_env=self.proxy_env,
                        network=self.network if cmd.network in ("", "default") else cmd.network,
                        security=cmd.security or "sandbox", mounts=tuple(mounts),
                        description=description)
        st.root = op
        self.commit(st, run_created_by(args, st.build_args, st.env), op)

    def run_mount(self, st: _Stage, cmd: ins.Run, spec: str, index: int) -> graph.Mount:
        m = self.wrap(lambda: ins.parse_mount(spec, lambda w: self.lexer.process_word(w, st.env)),
                      cmd.node)
        target = m.target
        if target and not target.startswith("/"):
            target = go_clean(posixpath.join(self.workdir(st), target))
        elif target:
            target = go_clean(target)
        if target == "/":
            raise self.error('invalid mount target "/"', cmd.node)
        source: Optional[graph.Op] = None
        if m.from_:
            source = self.dispatched_source(st, m.from_, cmd, False, "mount")
        if m.type in ("bind", "cache", "tmpfs") and not target:
            raise self.error("mount target must be specified", cmd.node)
        if m.type == "bind":
            selector = go_clean("/" + m.source) if m.source else "/"
            return graph.Mount(target=target, type="bind", source=source or self.context,
                               selector=selector, readonly=m.readonly)
        if m.type == "cache":
            selector = go_clean("/" + m.source) if m.source else "/"
            return graph.Mount(target=target, type="cache", source=source, selector=selector,
                               readonly=m.readonly, cache_id=m.cache_id or target,
                               sharing=m.sharing or "shared",
                               mode=m.mode if m.mode is not None else 0o755,
                               uid=m.uid or 0, gid=m.gid or 0)
        if m.type == "tmpfs":
            return graph.Mount(target=target, type="tmpfs", readonly=False, size=m.size_limit)
        if m.type == "secret":
            sid = m.source or m.cache_id
            if not sid:
                if not target:
                    raise self.error("one of source, target required", cmd.node)
                sid = posixpath.basename(target)
            if not target and m.env is None:
                target = "/run/secrets/" + posixpath.basename(sid)
            return graph.Mount(target=target, type="secret", readonly=True, secret_id=sid,
                               required=m.required, env=m.env or "",
                               mode=m.mode if m.mode is not None else 0o400,
                               uid=m.uid or 0, gid=m.gid or 0)
        # ssh
        sid = m.cache_id or "default"
        if not target:
            target = f"/run/buildkit/ssh_agent.{index}"
        return graph.Mount(target=target, type="ssh", readonly=True, secret_id=sid,
                           required=m.required, mode=m.mode if m.mode is not None else 0o600,
                           uid=m.uid or 0, gid=m.gid or 0)

    def d_copy(self, st: _Stage, cmd: ins.Copy) -> None:
        source: graph.Op = self.context
        if cmd.from_:
            source = self.dispatched_source(st, cmd.from_, cmd, True, "copy")
        self.dispatch_copy(st, cmd, source, add=False)

    def d_add(self, st: _Stage, cmd: ins.Add) -> None:
        self.dispatch_copy(st, cmd, self.context, add=True)

    def dispatch_copy(self, st: _Stage, cmd, source: graph.Op, add: bool) -> None:
        env = st.env
        node = cmd.node
        srcs = [self.expand(s, env, node) for s in cmd.sources]
        dest_raw = self.expand(cmd.dest, env, node)
        chown = self.expand(cmd.chown, env, node) if cmd.chown else ""
        chmod = self.expand(cmd.chmod, env, node) if cmd.chmod else ""
        checksum = self.expand(cmd.checksum, env, node) if add and cmd.checksum else ""
        contents = []
        for c in cmd.contents:
            data = c.data
            if c.expand:
                data = self.wrap(lambda d=data: self.raw_lexer.process_word(d, env), node)
            contents.append((c.path, data))
        _validate_chmod(chmod, lambda msg: self.error(msg, node))
        if checksum:
            if len(srcs) != 1:
                raise self.error("checksum can't be specified for multiple sources", node)
            if not _is_remote(srcs[0]):
                raise self.error("checksum requires HTTP(S) or Git sources", node)
        dest = _path_relative_to_workdir(dest_raw, self.workdir(st))
        local: list[str] = []
        remote_actions: list = []
        for s in srcs:
            if _is_git(s):
                if not add:
                    raise self.error("source can't be a git ref for COPY", node)
                remote_actions.append(self.git_copy(st, cmd, s, checksum, dest, chown, chmod))
                continue
            if s.startswith(("http://", "https://")):
                if not add:
                    raise self.error("source can't be a URL for COPY", node)
                remote_actions.append(self.http_copy(st, cmd, s, checksum, dest, chown, chmod))
                continue
            parents = getattr(cmd, "parents", False)
            local.append(s if parents else go_clean("/" + s))
        if remote_actions and len(srcs) + len(contents) > 1 and not dest.endswith("/"):
            raise self.error("When using ADD with more than one source file, the destination "
                             "must be a directory and end with a /", node)
        unpack = add if getattr(cmd, "unpack", None) is None else bool(cmd.unpack)
        actions: list = list(remote_actions)
        if local:
            actions.append(graph.Copy(
                source=source, src=tuple(local), dest=dest, chown=chown, chmod=chmod,
                follow_symlinks=True, allow_wildcard=True, allow_empty_wildcard=True,
                create_dest_path=True, dir_contents_only=True, exclude=tuple(cmd.excludes),
                parents=bool(getattr(cmd, "parents", False)), unpack_archives=unpack,
                dest_cwd=self.workdir(st)))
        for path, data in contents:
            inline = graph.FileOp(root=graph.Scratch(), actions=(
                graph.Mkfile("/" + path, data.encode(), 0o644),),
                description="preparing inline document")
            actions.append(graph.Copy(
                source=inline, src=("/" + path,), dest=dest, chown=chown, chmod=chmod,
                follow_symlinks=False, allow_wildcard=False, allow_empty_wildcard=False,
                create_dest_path=True, dir_contents_only=False, dest_cwd=self.workdir(st)))
        description = self.describe(st, cmd)
        if getattr(cmd, "link", False) and not chmod:
            # --link (as BuildKit, not with --chmod): copy into an empty filesystem and
            # stack that layer on the stage, so neither its key nor its bytes depend on
            # what lies below; --chown names are still looked up in the stage
            users = st.root if graph.chown_has_names(chown) else None
            op = graph.FileOp(root=graph.Scratch(), actions=tuple(actions), users_from=users,
                              description=description)
            st.root = graph.Merge(root=st.root, upper=(op,), description=description)
        else:
            op = graph.FileOp(root=st.root, actions=tuple(actions), description=description)
            st.root = op
        created = copy_created_by(add, srcs, [p for p, _ in contents], dest_raw, chown, chmod,
                                  bool(getattr(cmd, "parents", False)))
        self.commit(st, created, op)

    def http_copy(self, st: _Stage, cmd, url: str, checksum: str, dest: str, chown: str,
                  chmod: str) -> graph.Copy:
        """ADD <url>: a download (named after the URL's last path segment) copied to dest;
        remote archives are unpacked only with --unpack=true."""
        from urllib.parse import urlsplit

        if checksum and not re.fullmatch(r"sha(256|384|512):[0-9a-f]+", checksum):
            raise self.error(f"invalid checksum {checksum!r}: expected sha256:<hex digest>",
                             cmd.node)
        try:
            base = posixpath.basename(urlsplit(url).path)
        except ValueError as e:  # e.g. "Invalid IPv6 URL": it could never be downloaded
            raise self.error(f"invalid URL {url!r}: {e}", cmd.node) from None
        filename = base if base not in ("", ".", "..", "/") else "__unnamed__"
        source = graph.HttpSource(url=url, filename=filename, checksum=checksum)
        return graph.Copy(source=source, src=("/" + filename,), dest=dest, chown=chown,
                          chmod=chmod, follow_symlinks=True, allow_wildcard=False,
                          create_dest_path=True, dir_contents_only=False,
                          unpack_archives=bool(getattr(cmd, "unpack", None)),
                          dest_cwd=self.workdir(st))

    def git_copy(self, st: _Stage, cmd, ref: str, checksum: str, dest: str, chown: str,
                 chmod: str) -> graph.Copy:
        """ADD <git url>: the checkout (or its subdir) copied into dest."""
        from frontends.dockerfile.gitref import GitRefError, parse_git_ref

        try:
            g = parse_git_ref(ref)
        except GitRefError as e:
            raise self.error(str(e), cmd.node) from None
        keep = getattr(cmd, "keep_git_dir", None)
        if keep is None:
            keep = bool(g.keep_git_dir)
        source = graph.GitSource(remote=g.remote, ref=g.ref, keep_git_dir=keep,
                                 checksum=checksum or g.checksum,
                                 submodules=g.submodules is not False)
        subdir = go_clean("/" + g.subdir) if g.subdir else "/"
        return graph.Copy(source=source, src=(subdir,), dest=dest, chown=chown, chmod=chmod,
                          follow_symlinks=True, allow_wildcard=False, create_dest_path=True,
                          dir_contents_only=True, dest_cwd=self.workdir(st))

    # ------------------------------------------------------------------ result

    def result(self, target: _Stage) -> CompileResult:
        allowed = set(_PLATFORM_ARGS) | {"SOURCE_DATE_EPOCH"}
        unused = sorted(k for k in self.build_args
                        if k not in self.declared_args and k not in allowed
                        and k.upper() not in _PROXY_ARGS and not k.startswith("BUILDKIT_"))
        # (the caller reports unused_build_args: BuildKit's "were not consumed" warning)
        tgt = graph.ImageTarget(root=target.root, config=target.config,
                                history=tuple(target.history), base=target.base_image,
                                platform=target.platform or self.platform,
                                stage_name=target.name, author=target.author)
        return CompileResult(tgt, tuple(self.warnings), tuple(unused), tuple(self.stage_ops))


# --------------------------------------------------------------------------- public API


def compile_dockerfile(text: str, *, resolver: graph.ImageResolver, filename: str = "Dockerfile",
                       build_args: Mapping[str, str] = {}, target: Optional[str] = None,
                       platform: str = "linux/amd64", network: str = "default",
                       context_name: str = "context") -> CompileResult:
    """Compile a Dockerfile into the graph IR for `target` (default: the last stage).

    Raises `DockerfileError` (a `DefinitionError`) with the offending line for a bad
    Dockerfile; whatever `resolver.resolve` raises for a base image passes through."""
    return _Compiler(text, resolver, filename, build_args, target, platform, network,
                     context_name).run()


def stage_names(text: str, filename: str = "Dockerfile") -> tuple[str, ...]:
    """The stage names of a Dockerfile, in order ("" for an unnamed stage)."""
    out = []
    for node in parse(text, filename).nodes:
        if node.keyword == "from":
            cmd = ins.parse_instruction(node, filename)
            out.append(cmd.stage_name)
    return tuple(out)


def source_only_stage_filename(text: str, stage_index: int,
                                build_args: Mapping[str, str] = {}) -> str:
    """For a "source-only" stage (see SOURCE_DATE_EPOCH): the file name its HTTP source
    gets (the last path segment of the URL, or `__unnamed__`)."""
    from urllib.parse import urlsplit

    c = _Compiler(text, _NoResolver(), "Dockerfile", build_args, None, "linux/amd64",
                  "default", "context")
    parsed = parse(text)
    c.lines = tuple(parsed.lines)
    meta = c.parse_stages(parsed.nodes)
    c.global_args = c.default_args(c.stages[-1])
    c.build_meta_args(meta)
    c.init_stages()
    url = c.source_only_url(c.stages[stage_index])
    base = posixpath.basename(urlsplit(url).path)
    return base if base not in ("", ".", "/") else "__unnamed__"


class _NoResolver:
    def resolve(self, ref: str, platform: Optional[str] = None) -> graph.ResolvedImage:
        raise DefinitionError(f"no image resolver available for {ref}")


def proxy_env_from_build_args(build_args: Mapping[str, str]) -> tuple[str, ...]:
    """The proxy environment of RUN steps from the predefined proxy build args; when both
    cases are given the lowercase one wins (it sorts last, as in BuildKit)."""
    values: dict[str, str] = {}
    for k in sorted(build_args):
        up = k.upper()
        if up in _PROXY_ARGS:
            values[up] = build_args[k]
    out: list[str] = []
    for name in _PROXY_ARGS:
        v = values.get(name, "")
        if v:
            out += [f"{name}={v}", f"{name.lower()}={v}"]
    return tuple(out)


def resolve_source_date_epoch(value: str) -> Optional[int]:
    """SOURCE_DATE_EPOCH: decimal unix seconds -> int; "context" -> None (the context's
    own time, decided later); anything else is an error."""
    if value == "context":
        return None
    if re.fullmatch(r"\d+", value):
        return int(value)
    raise DefinitionError(f"invalid SOURCE_DATE_EPOCH: {value}")


# --------------------------------------------------------------------------- path helpers


def _normalize_workdir(current: str, requested: str) -> str:
    if not requested.startswith("/"):
        requested = (current or "/") + "/" + requested
    return go_clean(requested)


def _path_relative_to_workdir(p: str, workdir: str) -> str:
    """A COPY/ADD destination made absolute; a trailing "/" (directory) is kept."""
    if not p.startswith("/"):
        if p in ("", "."):
            p = "./"
        p = workdir.rstrip("/") + "/" + p
    keep = p.endswith("/") or p.endswith("/.")
    out = go_clean(p)
    if keep and out != "/":
        out += "/"
    return out


_PLATFORM_PART = re.compile(r"^[A-Za-z0-9_.-]+$")


def from_platform_error(expr: str, plat: str, unmatched, known_args) -> str:
    """The error for `FROM --platform=<expr>` expanding to `plat` ("" if it is fine), with
    a "did you mean" for a misspelt ARG among `unmatched`."""
    if plat == "":
        problem = "empty platform value from expression " + expr
    else:
        problem = platform_problem(plat)
        if not problem:
            return ""
        problem = f"failed to parse platform {expr}: {problem}"
    for name in sorted(unmatched):
        match = ins.suggest(name, list(known_args), True)
        if match:
            return problem + f" (did you mean {match}?)"
    return problem


def platform_problem(p: str) -> str:
    """Why containerd's platforms.Parse would reject `p` ("" if it would not)."""
    for part in p.split("/"):
        if not _PLATFORM_PART.match(part):
            return (f'"{part}" is an invalid component of "{p}": platform specifier component '
                    'must match "^[A-Za-z0-9_.-]+$": invalid argument')
    if len(p.split("/")) > 3:
        return f'"{p}": unknown operating system or architecture: invalid argument'
    return ""


def _split_platform(p: str) -> tuple[str, str, str]:
    parts = p.split("/")
    os_ = parts[0] if parts else "linux"
    arch = parts[1] if len(parts) > 1 else ""
    variant = parts[2] if len(parts) > 2 else ""
    return os_, arch, variant


def _host_platform() -> str:
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return "linux/" + arch


def _is_git(src: str) -> bool:
    from frontends.dockerfile.gitref import is_git_ref
    return is_git_ref(src)


def _is_remote(src: str) -> bool:
    return src.startswith(("http://", "https://")) or _is_git(src)


_SYMBOLIC_MODE = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+$")


def _validate_chmod(chmod: str, error) -> None:
    if not chmod:
        return
    if re.fullmatch(r"[0-9]+", chmod):
        try:
            value = int(chmod, 8)
        except ValueError:
            value = -1
        if value < 0 or value > 0o7777:
            raise error(f"invalid chmod parameter: '{chmod}'. it should be octal string and "
                        "between 0 and 07777")
        return
    if not all(_SYMBOLIC_MODE.match(part) for part in chmod.split(",")):
        raise error(f"invalid chmod parameter: '{chmod}'. it should be octal string and "
                    "between 0 and 07777")


def _valid_signal(sig: str) -> bool:
    if re.fullmatch(r"[+-]?[0-9]+", sig):
        return int(sig) != 0  # moby/sys/signal accepts any non-zero number
    name = sig.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if re.fullmatch(r"RTMIN(\+\d+)?|RTMAX(-\d+)?", name):
        return True
    return name in _SIGNALS


def _add_env(env: dict, key: str, value: str) -> None:
    """Set a build-time variable the way BuildKit's llb.EnvList does: a (re)assigned name
    moves to the end (its order shows in RUN's env, hence in the op digest)."""
    env.pop(key, None)
    env[key] = value


def _warning_text(w) -> str:
    short = getattr(w, "short", None)
    if short is None:
        return str(w)
    line = getattr(w, "line", 0)
    return f"{short} (line {line})" if line else short


def _summarize_heredoc(doc: str) -> str:
    lines = doc.strip().replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")
