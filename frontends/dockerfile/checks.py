"""Dockerfile build checks (BuildKit's linter): Dockerfile text + context facts -> warnings.

This module owns every rule of BuildKit's `linter/ruleset.go`, the `# check=` directive
(`skip=<rules>|all;error=true;experimental=<rules>|all`), per-instruction `# check=skip=`
comments, and the `BUILDKIT_DOCKERFILE_CHECK` build arg that replaces the directive.

It is pure: it reads nothing from disk. What it needs to know about the world comes in
as arguments: whether a context path is excluded by `.dockerignore` (a callable), and the
config of base images (an optional `graph.ImageResolver`; without one, base images count
as having only the default PATH).

Two modes, as in BuildKit:
- lint mode (`docker build --check`, `all_stages=True`): every stage is looked at;
- build mode (`all_stages=False`): rules that BuildKit runs while dispatching
  instructions (UndefinedVar, LegacyKeyValueFormat, CopyIgnoredFile, ...) only look at
  the stages the target needs; rules on the file's structure look at all of it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from frontends.dockerfile import instructions as ins
from frontends.dockerfile.checkrules import (RULES, CheckConfig, CheckOptionError, CheckResult,
                                             IsIgnored, LintViolation, Rule, Warning, rule_url)
from frontends.dockerfile.compile import from_platform_error
from frontends.dockerfile.parser import (DockerfileError, Node, ParseResult, parse,
                                         split_command)
from frontends.dockerfile.shell import ShellExpansionError, ShellLexer, go_quote
from pybuild import graph
from pybuild.errors import DefinitionError

__all__ = ["Warning", "Rule", "RULES", "CheckConfig", "CheckResult", "CheckOptionError",
           "LintViolation", "run_checks", "rule_url", "CHECK_BUILD_ARG"]

CHECK_BUILD_ARG = "BUILDKIT_DOCKERFILE_CHECK"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PLATFORM_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
                  "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH",
                  "TARGETVARIANT", "TARGETSTAGE")
# ARGs that configure the builder: never reported as undefined variables
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_RESERVED_STAGE_NAMES = ("context", "scratch")




# --------------------------------------------------------------------------- entry point


def run_checks(source: str | ParseResult, *, build_args: Mapping[str, str] | None = None,
               target: Optional[str] = None, all_stages: bool = True,
               is_ignored: Optional[IsIgnored] = None,
               resolver: Optional[graph.ImageResolver] = None,
               platform: str = "linux/amd64", build_platform: str = "linux/amd64",
               filename: str = "Dockerfile") -> CheckResult:
    """Run every enabled rule over a Dockerfile.

    `is_ignored(path)` says whether a cleaned, context-relative source path of COPY/ADD
    is excluded by `.dockerignore` (`"."` is the context root). `resolver` gives base
    image configs (ENV, SHELL, platform); errors from it are ignored here (the build
    reports them). A bad check option raises CheckOptionError; any other definition
    error is returned in `CheckResult.error` together with the warnings found before it.
    """
    return _Checker(source, dict(build_args or {}), target, all_stages, is_ignored, resolver,
                    platform, build_platform, filename).run()


# --------------------------------------------------------------------------- the checker


@dataclass(eq=False)
class _StageState:
    """What one stage knows while its instructions are walked."""

    index: int
    name: str  # lowercased AS name or ""
    from_cmd: ins.From
    commands: list = field(default_factory=list)
    base_expanded: str = ""
    platform_expanded: str = ""
    parent: Optional["_StageState"] = None
    # filled while walking
    env: dict[str, str] = field(default_factory=dict)
    args: set[str] = field(default_factory=set)
    shell_set: bool = False
    workdir_set: bool = False
    walked: bool = False


class _Stop(Exception):
    """Internal: a definition error ends the checks."""


class _Checker:
    def __init__(self, source, build_args, target, all_stages, is_ignored, resolver,
                 platform, build_platform, filename):
        self.source = source
        self.build_args: dict[str, str] = build_args
        self.target = target
        self.all_stages = all_stages
        self.is_ignored = is_ignored
        self.resolver = resolver
        self.platform = platform
        self.build_platform = build_platform
        self.filename = filename
        self.config = CheckConfig()
        self.found: list[tuple[Warning, Optional[Node]]] = []
        self.node_skips: dict[int, tuple[bool, frozenset[str]]] = {}
        self.lines: tuple[str, ...] = ()
        self.lexer = ShellLexer()
        self.stages: list[_StageState] = []
        self.meta_args: list[ins.Arg] = []
        self.error: Optional[DefinitionError] = None
        self.parse_error = False

    # ------------------------------------------------------------------ driver

    def run(self) -> CheckResult:
        try:
            parsed = self.source if isinstance(self.source, ParseResult) else parse(
                self.source, self.filename)
        except DefinitionError as e:
            return CheckResult((), self.config, e)
        self.lines = parsed.lines
        self.lexer = ShellLexer(parsed.escape_token)
        self.config = self.options(parsed)
        for i, node in enumerate(parsed.nodes):
            # the file's directives sit in the first node's comments: they are not local
            self.node_skips[id(node)] = _comment_skips(
                node, _leading_directives(node, parsed.directives) if i == 0 else 0)
        try:
            self.parser_warnings(parsed)
            self.instruction_casing(parsed.nodes)
            self.parse_instructions(parsed.nodes)
            self.stage_names()
            self.multiple_instructions()
            global_env, declared = self.global_args(defaults_only=False)
            default_env, _ = self.global_args(defaults_only=True)
            for cmd in self.meta_args:
                for a in cmd.args:
                    self.secret_key("ARG", a.key, cmd.node)
            for st in self.stages:
                self.check_from(st, global_env, default_env, declared)
            for st in self.stages_to_walk():
                self.walk(st)
        except _Stop:
            pass
        warnings = tuple(w for w, node in self.found if self.enabled(w.rule, node))
        return CheckResult(warnings, self.config, self.error, self.parse_error)

    def options(self, parsed: ParseResult) -> CheckConfig:
        text = self.build_args.get(CHECK_BUILD_ARG)
        where = f"build arg {CHECK_BUILD_ARG}"
        if text is None:
            text, where = parsed.directive("check") or "", "# check= directive"
        try:
            return CheckConfig.parse(text)
        except CheckOptionError as e:
            raise CheckOptionError(f"{e.message} (in the {where})",
                                   filename=self.filename) from None

    def enabled(self, rule_name: str, node: Optional[Node]) -> bool:
        rule = RULES[rule_name]
        if not self.config.enabled(rule):
            return False
        if node is not None:
            skip_all, skip = self.node_skips.get(id(node), (False, frozenset()))
            if rule.name in skip or (skip_all and not rule.experimental):
                return False
        return True

    def warn(self, rule_name: str, detail: str, node: Optional[Node]) -> None:
        rule = RULES[rule_name]
        line = node.start_line if node is not None else 0
        end = node.end_line if node is not None else 0
        self.found.append((Warning(rule.name, detail, line, rule.description, rule.url,
                                   end_line=end), node))

    def stop(self, err: DefinitionError, parse_error: bool = False) -> _Stop:
        self.error = err
        self.parse_error = parse_error
        return _Stop()

    def node_error(self, message: str, node: Optional[Node]) -> _Stop:
        if node is None or node.start_line <= 0:
            return self.stop(DockerfileError(message, filename=self.filename))
        shown = self.lines[node.start_line - 1:max(node.end_line, node.start_line)]
        return self.stop(DockerfileError(message, filename=self.filename, line=node.start_line,
                                         source_lines=tuple(shown), end_line=node.end_line))

    # ------------------------------------------------------------------ whole-file rules

    def parser_warnings(self, parsed: ParseResult) -> None:
        for w in parsed.warnings:
            if w.rule != "NoEmptyContinuation":
                continue
            node = next((n for n in parsed.nodes if n.start_line <= w.line <= n.end_line), None)
            rule = RULES["NoEmptyContinuation"]
            # BuildKit points at the line that ends the instruction
            self.found.append((Warning(rule.name, "Empty continuation line", w.line,
                                       rule.description, rule.url, end_line=w.line), node))

    def instruction_casing(self, nodes: tuple[Node, ...]) -> None:
        words = [(node, _keyword_as_written(node)) for node in nodes]
        lower = sum(1 for _, w in words if w == w.lower() and w != w.upper())
        upper = sum(1 for _, w in words if w == w.upper() and w != w.lower())
        majority_lower = lower > upper
        for node, word in words:
            if majority_lower and word != word.lower():
                self.warn("ConsistentInstructionCasing",
                          f"Command '{word}' should match the case of the command majority "
                          "(lowercase)", node)
            elif not majority_lower and word != word.upper():
                self.warn("ConsistentInstructionCasing",
                          f"Command '{word}' should match the case of the command majority "
                          "(uppercase)", node)

    def parse_instructions(self, nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            try:
                cmd = ins.parse_instruction(node, self.filename, self.lines)
            except DefinitionError as e:
                raise self.stop(e, parse_error=True) from None
            if isinstance(cmd, ins.From):
                self.from_words(node, cmd)
                self.stages.append(_StageState(len(self.stages), cmd.stage_name, cmd))
            elif isinstance(cmd, ins.Maintainer):
                self.warn("MaintainerDeprecated",
                          "Maintainer instruction is deprecated in favor of using label", node)
            if isinstance(cmd, ins.Arg):
                self.description("ARG", [a.key for a in cmd.args], node)
            if not self.stages:
                if not isinstance(cmd, ins.Arg):
                    raise self.node_error("no build stage in current context", node)
                self.meta_args.append(cmd)
            elif not isinstance(cmd, ins.From):
                self.stages[-1].commands.append(cmd)
        if not self.stages:
            raise self.stop(DockerfileError("dockerfile contains no stages to build",
                                            filename=self.filename))

    def from_words(self, node: Node, cmd: ins.From) -> None:
        args = node.args
        if len(args) == 3:
            if args[2] != args[2].lower():
                self.warn("StageNameCasing", f"Stage name '{args[2]}' should be lowercase", node)
            keyword = _keyword_as_written(node)
            as_word = args[1]
            if keyword == keyword.lower() and as_word != as_word.lower() or (
                    keyword == keyword.upper() and keyword != keyword.lower()
                    and as_word != as_word.upper()):
                self.warn("FromAsCasing",
                          f"'{as_word}' and '{keyword}' keywords' casing do not match", node)
        if cmd.stage_name:
            self.description("FROM", [cmd.stage_name], node)

    def description(self, instruction: str, keys: list[str], node: Node) -> None:
        comments = node.comments
        if not comments or not keys:
            return
        if comments[-1].split(" ")[0] in keys:
            return
        example = keys[0] if len(keys) == 1 else "<arg_key>"
        self.warn("InvalidDefinitionDescription",
                  f"Comment for {instruction} should follow the format: "
                  f"`# {example} <description>`", node)

    def stage_names(self) -> None:
        seen: set[str] = set()
        for st in self.stages:
            if not st.name:
                continue
            node = st.from_cmd.node
            if st.name in _RESERVED_STAGE_NAMES:
                self.warn("ReservedStageName", "Stage name should not use the same name as "
                          f'reserved stage "{st.name}"', node)
            if st.name in seen:
                self.warn("DuplicateStageName",
                          f'Duplicate stage name "{st.name}", stage names should be unique', node)
            seen.add(st.name)

    def multiple_instructions(self) -> None:
        for st in self.stages:
            last: dict[type, object] = {}
            for cmd in st.commands:
                if isinstance(cmd, (ins.Cmd, ins.Entrypoint, ins.Healthcheck)):
                    if type(cmd) in last:
                        prev = last[type(cmd)]
                        self.warn("MultipleInstructionsDisallowed",
                                  f"Multiple {prev.name} instructions should not be used in the "
                                  "same stage because only the last one will be used", prev.node)
                    last[type(cmd)] = cmd

    # ------------------------------------------------------------------ FROM rules

    def global_args(self, defaults_only: bool) -> tuple[dict[str, str], set[str]]:
        """The environment FROM lines are expanded in, and the names declared there."""
        tos, tarch, tvar = _split_platform(self.platform)
        bos, barch, bvar = _split_platform(self.build_platform)
        env = {
            "BUILDPLATFORM": _join_platform(bos, barch, bvar), "BUILDOS": bos,
            "BUILDOSVERSION": "", "BUILDARCH": barch, "BUILDVARIANT": bvar,
            "TARGETPLATFORM": _join_platform(tos, tarch, tvar), "TARGETOS": tos,
            "TARGETOSVERSION": "", "TARGETARCH": tarch, "TARGETVARIANT": tvar,
            "TARGETSTAGE": self.target_stage().name if self.stages else "",
        }
        if not defaults_only:
            for k in env:
                if k in self.build_args:
                    env[k] = self.build_args[k]
        declared = set(env)
        for cmd in self.meta_args:
            for a in cmd.args:
                declared.add(a.key)
                if not defaults_only and a.key in self.build_args:
                    env[a.key] = self.build_args[a.key]
                elif a.value is not None:
                    env[a.key] = self.expand_quiet(a.value, env)
        return env, declared

    def check_from(self, st: _StageState, env: dict[str, str], default_env: dict[str, str],
                   declared: set[str]) -> None:
        cmd, node = st.from_cmd, st.from_cmd.node
        base, _, unmatched = self.expand_matches(cmd.base_name, env, node)
        self.undeclared_in_from(unmatched, env, declared, node)
        if "$" in cmd.base_name:
            default = self.expand_quiet(cmd.base_name, default_env)
            if not _valid_image_ref(default):
                self.warn("InvalidDefaultArgInFrom", f"Default value for ARG {cmd.base_name} "
                          "results in empty or invalid base image name", node)
        if cmd.platform:
            plat, matched, unmatched = self.expand_matches(cmd.platform, env, node)
            self.undeclared_in_from(unmatched, env, declared, node)
            if cmd.platform in ("$TARGETPLATFORM", "${TARGETPLATFORM}"):
                self.warn("RedundantTargetPlatform", f"Setting platform to predefined "
                          f"{cmd.platform} in FROM is redundant as this is the default behavior",
                          node)
            elif not matched and not unmatched and "$" not in cmd.platform:
                os_, arch, _ = _split_platform(plat)
                if not (st.name and ((os_ and os_ in st.name) or (arch and arch in st.name))):
                    self.warn("FromPlatformFlagConstDisallowed", "FROM --platform flag should "
                              f"not use constant value {go_quote(cmd.platform)}", node)
            problem = from_platform_error(cmd.platform, plat, unmatched, env)
            if problem:
                raise self.node_error(problem, node)
            st.platform_expanded = plat
        if base == "":
            raise self.node_error(f"base name ({cmd.base_name}) should not be blank", node)
        st.base_expanded = base

    def undeclared_in_from(self, unmatched: set[str], env: Mapping[str, str],
                           declared: set[str], node: Optional[Node]) -> None:
        for name in sorted(unmatched):
            if name in declared:
                continue
            detail = f"FROM argument '{name}' is not declared"
            match = ins.suggest(name, list(env), True)
            if match:
                detail += f" (did you mean {match}?)"
            self.warn("UndefinedArgInFrom", detail, node)

    # ------------------------------------------------------------------ stage walk

    def target_stage(self) -> _StageState:
        if self.target:
            low = self.target.lower()
            for st in reversed(self.stages):
                if st.name == low:
                    return st
        return self.stages[-1]

    def find_stage(self, ref: str, before: int) -> Optional[_StageState]:
        low = ref.lower()
        for st in reversed(self.stages[:before]):
            if st.name and st.name == low:
                return st
        return None

    def stages_to_walk(self) -> list[_StageState]:
        for st in self.stages:
            st.parent = self.find_stage(st.base_expanded, st.index)
        if self.all_stages:
            return list(self.stages)
        wanted: set[int] = set()
        todo = [self.target_stage()]
        while todo:
            st = todo.pop()
            if st.index in wanted:
                continue
            wanted.add(st.index)
            if st.parent is not None:
                todo.append(st.parent)
            todo.extend(self.stage_deps(st))
        return [st for st in self.stages if st.index in wanted]

    def stage_deps(self, st: _StageState) -> list[_StageState]:
        out = []
        for cmd in st.commands:
            refs = []
            if isinstance(cmd, ins.Copy) and cmd.from_:
                refs.append(cmd.from_)
            if isinstance(cmd, ins.Run):
                for spec in cmd.mounts:
                    try:
                        m = ins.parse_mount(spec, None)
                    except (ins.FlagError, ValueError):
                        continue
                    if m.from_:
                        refs.append(m.from_)
            for ref in refs:
                if re.fullmatch(r"\d+", ref):
                    i = int(ref)
                    if i < len(self.stages):
                        out.append(self.stages[i])
                else:
                    dep = self.find_stage(ref, len(self.stages))
                    if dep is not None:
                        out.append(dep)
        return out

    def walk(self, st: _StageState) -> None:
        if st.walked:
            return
        st.walked = True
        if st.parent is not None:
            self.walk(st.parent)
            p = st.parent
            st.env, st.args = dict(p.env), set(p.args)
            st.shell_set, st.workdir_set = p.shell_set, p.workdir_set
        else:
            self.init_from_image(st)
        for cmd in st.commands:
            handler = getattr(self, "w_" + type(cmd).__name__.lower(), None)
            if handler is not None:
                handler(st, cmd)

    def init_from_image(self, st: _StageState) -> None:
        if st.base_expanded.lower() == "scratch" or self.resolver is None:
            st.env = {"PATH": _DEFAULT_PATH}
            return
        expected = st.platform_expanded or self.platform
        try:
            resolved = self.resolver.resolve(st.base_expanded, expected)
        except Exception:  # noqa: BLE001 - a missing image is the build's error to report
            st.env = {"PATH": _DEFAULT_PATH}
            return
        for item in resolved.config.env:
            k, _, v = item.partition("=")
            st.env[k] = v
        st.env.setdefault("PATH", _DEFAULT_PATH)
        st.shell_set = bool(resolved.config.shell)
        got = resolved.platform or ""
        if got and _normalize_platform(got) != _normalize_platform(expected):
            self.warn("InvalidBaseImagePlatform",
                      f"Base image {st.base_expanded} was pulled with platform {go_quote(got)}, "
                      f"expected {go_quote(expected)} for current build", st.from_cmd.node)

    # expansion ------------------------------------------------------------

    def expand_matches(self, word: str, env: Mapping[str, str], node: Optional[Node]
                       ) -> tuple[str, set[str], set[str]]:
        try:
            return self.lexer.process_word_with_matches(word, env)
        except ShellExpansionError as e:
            raise self.node_error(str(e), node) from None

    def expand_quiet(self, word: str, env: Mapping[str, str]) -> str:
        try:
            return self.lexer.process_word(word, env)
        except ShellExpansionError:
            return word

    def expand(self, st: _StageState, word: str, node: Optional[Node]) -> str:
        """Expand one word in the stage's environment, reporting undefined variables."""
        try:
            result, _, unmatched = self.lexer.process_word_with_matches(word, st.env)
        except ShellExpansionError:
            return word  # the build reports the syntax error
        for name in sorted(unmatched):
            if name in st.args or name in _NON_ENV_ARGS:
                continue
            detail = f"Usage of undefined variable '${name}'"
            match = ins.suggest(name, list(st.env), True)
            if match:
                detail += f" (did you mean ${match}?)"
            self.warn("UndefinedVar", detail, node)
        return result

    # instructions ---------------------------------------------------------

    def w_env(self, st: _StageState, cmd: ins.Env) -> None:
        pairs = [(self.expand(st, p.key, cmd.node), self.expand(st, p.value, cmd.node), p)
                 for p in cmd.pairs]
        for key, value, p in pairs:
            self.secret_key("ENV", key, cmd.node)
            if p.no_delim:
                self.legacy_format("ENV", cmd.node)
            st.env[key] = value

    def w_label(self, st: _StageState, cmd: ins.Label) -> None:
        for p in cmd.pairs:
            self.expand(st, p.key, cmd.node)
            self.expand(st, p.value, cmd.node)
            if p.no_delim:
                self.legacy_format("LABEL", cmd.node)

    def w_arg(self, st: _StageState, cmd: ins.Arg) -> None:
        global_env, _ = self.global_args(defaults_only=False)
        for a in cmd.args:
            self.secret_key("ARG", a.key, cmd.node)
            value = a.value
            if value is not None:
                value = self.expand(st, value, cmd.node)
            if a.key in self.build_args:
                value = self.build_args[a.key]
            elif value is None and a.key in global_env:
                value = global_env[a.key]
            st.args.add(a.key)
            if value is not None:
                st.env[a.key] = value

    def w_copy(self, st: _StageState, cmd: ins.Copy) -> None:
        self.copy_like(st, cmd, "Copy", from_context=not cmd.from_)

    def w_add(self, st: _StageState, cmd: ins.Add) -> None:
        self.copy_like(st, cmd, "Add", from_context=True)

    def copy_like(self, st: _StageState, cmd, verb: str, from_context: bool) -> None:
        for flag in (cmd.chown, cmd.chmod):
            if flag:
                self.expand(st, flag, cmd.node)
        sources = [self.expand(st, s, cmd.node) for s in cmd.sources]
        self.expand(st, cmd.dest, cmd.node)
        if not from_context or self.is_ignored is None:
            return
        for src in sources:
            if verb == "Add" and _is_remote(src):
                continue
            path = _clean_source(src)
            try:
                ignored = self.is_ignored(path)
            except Exception:  # noqa: BLE001 - a bad pattern is the build's error to report
                ignored = False
            if ignored:
                self.warn("CopyIgnoredFile",
                          f'Attempting to {verb} file "{path}" that is excluded by .dockerignore',
                          cmd.node)

    def w_workdir(self, st: _StageState, cmd: ins.Workdir) -> None:
        path = self.expand(st, cmd.path, cmd.node)
        if path.startswith("/"):
            st.workdir_set = True
        elif not st.workdir_set:
            self.warn("WorkdirRelativePath", f'Relative workdir "{path}" can have unexpected '
                      "results if the base image changes", cmd.node)

    def w_user(self, st: _StageState, cmd: ins.User) -> None:
        self.expand(st, cmd.user, cmd.node)

    def w_volume(self, st: _StageState, cmd: ins.Volume) -> None:
        for v in cmd.volumes:
            self.expand(st, v, cmd.node)

    def w_stopsignal(self, st: _StageState, cmd: ins.Stopsignal) -> None:
        self.expand(st, cmd.signal, cmd.node)

    def w_expose(self, st: _StageState, cmd: ins.Expose) -> None:
        # the parser keeps EXPOSE words in file order; ins.Expose sorts them
        words = list(cmd.node.args) if cmd.node is not None else list(cmd.ports)
        for word in words:
            spec = self.expand(st, word, cmd.node)
            for port in spec.split():
                if ":" in port:
                    self.warn("ExposeInvalidFormat", "EXPOSE instruction should not define an "
                              f"IP address or host-port mapping, found '{port}'", cmd.node)
                _, slash, proto = port.rpartition("/")
                if slash and proto != proto.lower():
                    self.warn("ExposeProtoCasing", f"Defined protocol '{port}' in EXPOSE "
                              "instruction should be lowercase", cmd.node)

    def w_shell(self, st: _StageState, cmd: ins.Shell) -> None:
        st.shell_set = True

    def w_cmd(self, st: _StageState, cmd: ins.Cmd) -> None:
        self.json_args("CMD", st, cmd)

    def w_entrypoint(self, st: _StageState, cmd: ins.Entrypoint) -> None:
        self.json_args("ENTRYPOINT", st, cmd)

    def json_args(self, name: str, st: _StageState, cmd) -> None:
        if cmd.prepend_shell and not st.shell_set:
            self.warn("JSONArgsRecommended", f"JSON arguments recommended for {name} to prevent "
                      "unintended behavior related to OS signals", cmd.node)

    # shared rule helpers --------------------------------------------------

    def legacy_format(self, name: str, node: Optional[Node]) -> None:
        self.warn("LegacyKeyValueFormat", f'"{name} key=value" should be used instead of legacy '
                  f'"{name} key value" format', node)

    def secret_key(self, name: str, key: str, node: Optional[Node]) -> None:
        if _looks_secret(key):
            self.warn("SecretsUsedInArgOrEnv", "Do not use ARG or ENV instructions for sensitive "
                      f'data ({name} "{key}")', node)


# --------------------------------------------------------------------------- helpers


_CHECK_COMMENT = re.compile(r"^check\s*=\s*(.*)$", re.IGNORECASE)


def _comment_skips(node: Node, directives: int = 0) -> tuple[bool, frozenset[str]]:
    """`# check=skip=A,B // why` comments right above an instruction: the rules skipped
    for that instruction only (text after `//` is the user's explanation). The first
    `directives` comments are the file's parser directives, not local ones."""
    skip_all = False
    skip: set[str] = set()
    for comment in node.comments[directives:]:
        m = _CHECK_COMMENT.match(comment)
        if not m:
            continue
        value = m.group(1).split("//", 1)[0]
        try:
            cfg = CheckConfig.parse(value)
        except CheckOptionError:
            continue
        skip_all = skip_all or cfg.skip_all
        skip |= cfg.skip
    return skip_all, frozenset(skip)


_DIRECTIVE_COMMENT = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")


def _leading_directives(node: Node, directives: tuple[tuple[str, str], ...]) -> int:
    """How many of the node's first comments are the file's parser directives."""
    n = 0
    for comment, (name, value) in zip(node.comments, directives):
        m = _DIRECTIVE_COMMENT.match(comment)
        if not m or m.group(1).lower() != name or m.group(2) != value:
            break
        n += 1
    return n


def _keyword_as_written(node: Node) -> str:
    try:
        word = split_command(node.original)[0]
    except Exception:  # noqa: BLE001 - the parser already accepted this line
        word = ""
    return word if word.lower() == node.keyword else node.keyword


# A key looks like a secret when its last `_`-separated word is a secret word and no word
# marks it as harmless (`PUBLIC_KEY`, `PASSWORD_FILE`). Looking at the last word only keeps
# `AUTH_MODULE_VERSION` quiet (as BuildKit does).
_SECRET_WORDS = frozenset({"apikey", "auth", "credential", "credentials", "key", "password",
                           "pword", "passwd", "secret", "token", "passphrase"})
_HARMLESS_WORDS = frozenset({"public", "file"})


def _looks_secret(key: str) -> bool:
    words = key.lower().split("_")
    if any(w in _HARMLESS_WORDS for w in words):
        return False
    return words[-1] in _SECRET_WORDS


def _split_platform(p: str) -> tuple[str, str, str]:
    parts = p.split("/")
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "",
            parts[2] if len(parts) > 2 else "")


def _join_platform(os_: str, arch: str, variant: str) -> str:
    return "/".join(p for p in (os_, arch, variant) if p)


def _normalize_platform(p: str) -> str:
    os_, arch, variant = _split_platform(p.lower())
    if arch == "arm64" and variant == "v8":
        variant = ""
    return _join_platform(os_, arch, variant)




# distribution/reference grammar, enough to tell a usable FROM name from a broken one
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$")


def _valid_image_ref(ref: str) -> bool:
    if not ref or len(ref.split("@")[0].rsplit(":", 1)[0]) > 255:
        return False
    return bool(_REFERENCE.match(ref))


def _clean_source(src: str) -> str:
    """Go's filepath.Clean of a COPY source, relative to the context root."""
    out: list[str] = []
    for part in src.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/".join(out) or "."


def _is_remote(src: str) -> bool:
    return src.startswith(("http://", "https://", "git@", "git://")) or ".git#" in src
