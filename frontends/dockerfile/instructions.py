"""Typed Dockerfile instructions: one frozen dataclass per instruction, built from parser nodes.

This module owns the step from the parser's AST (`parser.Node`) to typed values: flag
parsing with BuildKit's `BFlags` rules, argument-count checks with BuildKit's messages,
`RUN --mount` specs, `HEALTHCHECK` options, heredoc sources of COPY/ADD and RUN, EXPOSE
port specs. It does no variable expansion and no I/O: the compiler expands words when it
dispatches an instruction (it knows the environment at that point).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from frontends.dockerfile.parser import DockerfileError, Node
from pybuild.graph import Healthcheck as HealthConfig

__all__ = [
    "Instruction", "From", "Run", "Copy", "Add", "Cmd", "Entrypoint", "Env", "Arg", "Workdir",
    "User", "Label", "Expose", "Volume", "Shell", "Healthcheck", "Stopsignal", "Onbuild",
    "Maintainer", "KeyValue", "ArgPair", "SourceContent", "ShellInlineFile", "RunMount",
    "Device", "BFlags", "Flag", "FlagError", "parse_instruction", "parse_mount", "parse_device",
    "parse_go_duration", "format_go_duration", "parse_port_spec", "parse_port_specs",
    "handle_json_args", "parse_heredoc_word", "chomp_heredoc", "suggest", "with_suggestion",
    "INSTRUCTION_NAMES",
]

INSTRUCTION_NAMES = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
    "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)


# --------------------------------------------------------------------------- errors


class FlagError(ValueError):
    """A bad instruction flag or argument; `parse_instruction` turns it into a located
    DockerfileError."""


def suggest(value: str, options: list[str] | tuple[str, ...], case_sensitive: bool = False) -> str:
    """The closest option within edit distance 2 (BuildKit's util/suggest), or ""."""
    val = value if case_sensitive else value.lower()
    best, best_dist = "", 3
    for opt in options:
        o = opt if case_sensitive else opt.lower()
        if o == val:
            return ""
        d = _levenshtein(val, o)
        if d < best_dist:
            best, best_dist = o, d
    return best


def with_suggestion(message: str, value: str, options, case_sensitive: bool = False) -> str:
    match = suggest(value, options, case_sensitive)
    return f"{message} (did you mean {match}?)" if match else message


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# --------------------------------------------------------------------------- flags (BFlags)


@dataclass
class Flag:
    """One declared flag; `value` is "true"/"false" for bool flags (Go's IsTrue)."""

    name: str
    kind: str  # "string" | "bool" | "strings"
    value: str = ""
    values: list[str] = field(default_factory=list)
    used: bool = False

    @property
    def is_true(self) -> bool:
        return self.value == "true"


class BFlags:
    """BuildKit's instruction flag parser: declare flags, then `parse(args)` them.

    Rules: every word starts with `--`; a bare `--` ends the flags; unknown and repeated
    (non-multi) flags are errors; string flags need `=`; bool flags take nothing or
    `=true`/`=false` (any case)."""

    def __init__(self, args: tuple[str, ...] | list[str] = ()):
        self.args = list(args)
        self.flags: dict[str, Flag] = {}

    def add_string(self, name: str, default: str = "") -> Flag:
        return self._add(Flag(name, "string", default))

    def add_bool(self, name: str, default: bool = False) -> Flag:
        return self._add(Flag(name, "bool", "true" if default else "false"))

    def add_strings(self, name: str) -> Flag:
        return self._add(Flag(name, "strings"))

    def _add(self, flag: Flag) -> Flag:
        if flag.name in self.flags:
            raise FlagError(f"duplicate flag defined: {flag.name}")
        self.flags[flag.name] = flag
        return flag

    def used(self) -> list[str]:
        return sorted(f.name for f in self.flags.values() if f.used)

    def parse(self) -> None:
        for arg in self.args:
            if not arg.startswith("--"):
                raise FlagError(f"arg should start with -- : {arg}")
            if arg == "--":
                return
            name, eq, value = arg[2:].partition("=")
            flag = self.flags.get(name)
            if flag is None:
                raise FlagError(f"unknown flag: --{name}")
            if flag.used and flag.kind != "strings":
                raise FlagError(f"duplicate flag specified: --{name}")
            flag.used = True
            if flag.kind == "bool":
                if eq and value == "":
                    raise FlagError(f"missing a value on flag: --{name}")
                lower = value.lower()
                if lower == "":
                    flag.value = "true"
                elif lower in ("true", "false"):
                    flag.value = lower
                else:
                    raise FlagError(f"expecting boolean value for flag --{name}, not: {value}")
            else:
                if not eq:
                    raise FlagError(f"missing a value on flag: --{name}")
                if flag.kind == "string":
                    flag.value = value
                else:
                    flag.values.append(value)


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class KeyValue:
    """One ENV/LABEL pair, unexpanded; `no_delim` marks the legacy `KEY value` form."""

    key: str
    value: str
    no_delim: bool = False

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class ArgPair:
    """One name of an `ARG`, its default (None: none given) and the doc comment above it."""

    key: str
    value: Optional[str] = None  # None: declared without a default
    comment: str = ""


@dataclass(frozen=True)
class SourceContent:
    """A heredoc source of COPY/ADD: an inline file named `path`."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True)
class ShellInlineFile:
    """A heredoc attached to RUN/CMD/ENTRYPOINT (content not chomped; `chomp` kept)."""

    name: str
    data: str
    chomp: bool


@dataclass(frozen=True)
class RunMount:
    """A parsed `RUN --mount` value. `None` fields were not given (defaults apply at compile)."""

    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    readonly: bool = True
    cache_id: str = ""
    sharing: str = ""
    mode: Optional[int] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    required: bool = False
    size_limit: int = 0
    env: Optional[str] = None  # secret exposed as an env var


@dataclass(frozen=True)
class Device:
    """A parsed `RUN --device` value: the device name and whether it is required."""

    name: str
    required: bool = False


# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """Base of every instruction. `node` locates it (lines, original text)."""

    node: Optional[Node] = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return type(self).__name__.upper()

    @property
    def line(self) -> int:
        return self.node.start_line if self.node is not None else 0

    @property
    def end_line(self) -> int:
        return self.node.end_line if self.node is not None else 0

    @property
    def original(self) -> str:
        return self.node.original if self.node is not None else ""


@dataclass(frozen=True)
class From(Instruction):
    """A parsed `FROM`: the base image, stage name, platform and the doc comment above it."""

    base_name: str
    stage_name: str = ""  # lowercased; "" when there is no `AS`
    platform: str = ""
    doc_comment: str = ""  # `# <name> description` right above the FROM


@dataclass(frozen=True)
class Run(Instruction):
    """A parsed `RUN`: its command (exec or shell form), heredocs and flags."""

    cmd_line: tuple[str, ...]
    prepend_shell: bool
    files: tuple[ShellInlineFile, ...] = ()
    mounts: tuple[str, ...] = ()  # raw --mount values, expanded and parsed at dispatch
    network: str = ""
    security: str = ""
    flags_used: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cmd(Instruction):
    """A parsed `CMD`: its command (exec or shell form) and heredocs."""

    cmd_line: tuple[str, ...]
    prepend_shell: bool
    files: tuple[ShellInlineFile, ...] = ()


@dataclass(frozen=True)
class Entrypoint(Instruction):
    """A parsed `ENTRYPOINT`: its command (exec or shell form; None resets it) and heredocs."""

    cmd_line: Optional[tuple[str, ...]]  # None: `ENTRYPOINT []` (reset)
    prepend_shell: bool
    files: tuple[ShellInlineFile, ...] = ()


@dataclass(frozen=True)
class Copy(Instruction):
    """A parsed `COPY`: sources (or heredoc contents), destination and its flags."""

    sources: tuple[str, ...]
    dest: str
    contents: tuple[SourceContent, ...] = ()
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Add(Instruction):
    """A parsed `ADD`: sources (paths, URLs, git repos or heredoc contents), destination and
    its flags."""

    sources: tuple[str, ...]
    dest: str
    contents: tuple[SourceContent, ...] = ()
    chown: str = ""
    chmod: str = ""
    link: bool = False
    keep_git_dir: Optional[bool] = None
    checksum: str = ""
    excludes: tuple[str, ...] = ()
    unpack: Optional[bool] = None


@dataclass(frozen=True)
class Env(Instruction):
    """A parsed `ENV`: its key/value pairs, unexpanded."""

    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True)
class Label(Instruction):
    """A parsed `LABEL`: its key/value pairs, unexpanded."""

    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True)
class Arg(Instruction):
    """A parsed `ARG`: the build args it declares, with their defaults."""

    args: tuple[ArgPair, ...]


@dataclass(frozen=True)
class Workdir(Instruction):
    """A parsed `WORKDIR`: the working directory path."""

    path: str


@dataclass(frozen=True)
class User(Instruction):
    """A parsed `USER`: the user (and optional group) to run as."""

    user: str


@dataclass(frozen=True)
class Expose(Instruction):
    """A parsed `EXPOSE`: the ports (with optional protocol) it declares."""

    ports: tuple[str, ...]  # unexpanded words, sorted as BuildKit does


@dataclass(frozen=True)
class Volume(Instruction):
    """A parsed `VOLUME`: the mount points it declares."""

    volumes: tuple[str, ...]


@dataclass(frozen=True)
class Shell(Instruction):
    """A parsed `SHELL`: the shell that runs shell-form commands."""

    shell: tuple[str, ...]


@dataclass(frozen=True)
class Healthcheck(Instruction):
    """A parsed `HEALTHCHECK`: its test and options (a `NONE` test disables it)."""

    health: HealthConfig


@dataclass(frozen=True)
class Stopsignal(Instruction):
    """A parsed `STOPSIGNAL`: the signal that stops a container."""

    signal: str


@dataclass(frozen=True)
class Onbuild(Instruction):
    """A parsed `ONBUILD`: the trigger instruction kept in the image for child builds."""

    expression: str  # the trigger text, re-parsed when a child stage uses the image
    trigger: str = ""  # the trigger's instruction keyword, uppercased


@dataclass(frozen=True)
class Maintainer(Instruction):
    """A parsed `MAINTAINER` (deprecated): the author's name."""

    maintainer: str


AnyInstruction = Union[From, Run, Cmd, Entrypoint, Copy, Add, Env, Label, Arg, Workdir, User,
                       Expose, Volume, Shell, Healthcheck, Stopsignal, Onbuild, Maintainer]


# --------------------------------------------------------------------------- helpers


def handle_json_args(args: tuple[str, ...] | list[str], json_form: bool) -> list[str]:
    """Exec form keeps the words; shell form is one string (words joined by spaces)."""
    if json_form:
        return list(args)
    if not args:
        return []
    return [" ".join(args)]


_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")


@dataclass(frozen=True)
class HeredocWord:
    """A heredoc start word (`<<EOF`, `<<-EOF`, `3<<'EOF'`): its name and options."""

    name: str
    expand: bool
    chomp: bool
    file_descriptor: int


def parse_heredoc_word(word: str) -> Optional[HeredocWord]:
    """`<<EOF`, `<<-EOF`, `<<'EOF'`, `3<<EOF` -> its name and options; anything else -> None."""
    m = _HEREDOC_WORD.match(word)
    if not m:
        return None
    fd_text, dash, rest = m.groups()
    if not rest:
        return None
    quoted = any(c in rest for c in "'\"")
    name = rest.replace("'", "").replace('"', "")
    if not name:
        return None
    return HeredocWord(name, not quoted, bool(dash), int(fd_text) if fd_text else 0)


def chomp_heredoc(content: str) -> str:
    """`<<-` semantics: strip leading tabs from every line."""
    return re.sub(r"(?m)^\t+", "", content)


_GO_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
             "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_GO_DUR_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("1m30s", "1.5h", "100ms", "0")."""
    orig = text
    sign = 1
    if text[:1] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise FlagError(f'time: invalid duration "{orig}"')
    total = 0
    pos = 0
    while pos < len(text):
        m = _GO_DUR_PART.match(text, pos)
        if not m or m.group(1) in ("", "."):
            if m is None and re.match(r"\d*\.?\d*$", text[pos:]):
                raise FlagError(f'time: missing unit in duration "{orig}"')
            raise FlagError(f'time: invalid duration "{orig}"')
        number, unit = m.groups()
        whole, _, frac = number.partition(".")
        scale = _GO_UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // (10 ** len(frac))
        total += value
        pos = m.end()
    return sign * total


def format_go_duration(ns: int) -> str:
    """Go's time.Duration.String(): "0s", "100ms", "1.5s", "1m30s", "1h0m0s"."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        for unit, scale in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if u < scale * 1000:
                out = _frac(u, scale) + unit
                break
    else:
        secs_ns = u % 60_000_000_000
        out = _frac(secs_ns, 1_000_000_000) + "s"
        mins = u // 60_000_000_000
        if mins:
            hours, mins = divmod(mins, 60)
            out = f"{mins}m" + out
            if hours:
                out = f"{hours}h" + out
    return ("-" if neg else "") + out


def _frac(value: int, scale: int) -> str:
    whole, rem = divmod(value, scale)
    if not rem:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}." + f"{rem:0{digits}d}".rstrip("0")


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$", re.I)


def _ram_in_bytes(text: str) -> int:
    """docker/go-units RAMInBytes: "64m" -> 64 MiB (binary multiples)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(text)
    if not m.group(2):
        mult = 1
    else:
        mult = 1024 ** ("kmgtp".index(m.group(2).lower()) + 1)
    return int(float(m.group(1)) * mult)


def _parse_go_bool(value: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(value)


# --------------------------------------------------------------------------- RUN --mount

_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")
_MOUNT_KEYS = ("type", "from", "source", "target", "readonly", "id", "sharing", "required",
               "mode", "uid", "gid", "src", "dst", "ro", "rw", "readwrite", "size", "env",
               "destination")


def parse_mount(value: str, expand: Optional[Callable[[str], str]] = None) -> RunMount:
    """Parse one `--mount` value (CSV of key[=value]). With `expand`, option values (not
    `from`) are expanded first; without it, only `from` is checked (it never expands)."""
    try:
        fields = next(csv.reader([value], skipinitialspace=False))
    except (csv.Error, StopIteration) as e:
        raise FlagError(f"failed to parse csv mounts: {e}") from None
    m: dict = {"type": "bind"}
    ro_auto = True
    for fld in fields:
        key, eq, val = fld.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                m["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m["readonly"], ro_auto = False, False
            elif key == "required":
                if m["type"] not in ("secret", "ssh"):
                    raise FlagError(f"unexpected key '{key}' for mount type '{m['type']}'")
                m["required"] = True
            else:
                raise FlagError(f"invalid field '{fld}' must be a key=value pair")
            continue
        if key == "from":
            if re.search(r"\$.", val):
                raise FlagError(f"'{key}' doesn't support variable expansion, define alias stage instead")
        elif expand is not None:
            val = expand(val)
        if key == "type":
            t = val.lower()
            if t not in _MOUNT_TYPES:
                raise FlagError(with_suggestion(f'unsupported mount type "{val}"', val, _MOUNT_TYPES, True))
            m["type"] = t
        elif key == "from":
            m["from_"] = val
        elif key in ("source", "src"):
            m["source"] = val
        elif key in ("target", "dst", "destination"):
            m["target"] = val
        elif key in ("readonly", "ro", "readwrite", "rw"):
            try:
                b = _parse_go_bool(val)
            except ValueError:
                raise FlagError(f"invalid value for {key}: {val}") from None
            m["readonly"] = b if key in ("readonly", "ro") else not b
            ro_auto = False
        elif key == "required":
            if m["type"] not in ("secret", "ssh"):
                raise FlagError(f"unexpected key '{key}' for mount type '{m['type']}'")
            try:
                m["required"] = _parse_go_bool(val)
            except ValueError:
                raise FlagError(f"invalid value for {key}: {val}") from None
        elif key == "size":
            if m["type"] != "tmpfs":
                raise FlagError(f"unexpected key '{key}' for mount type '{m['type']}'")
            try:
                m["size_limit"] = _ram_in_bytes(val)
            except ValueError:
                raise FlagError(f"invalid value for {key}: {val}") from None
        elif key == "id":
            m["cache_id"] = val
        elif key == "sharing":
            s = val.lower()
            if s not in _SHARING:
                raise FlagError(with_suggestion(f'unsupported sharing value "{val}"', val, _SHARING, True))
            m["sharing"] = s
        elif key in ("mode", "uid", "gid"):
            try:
                n = int(val, 8 if key == "mode" else 10)
                if n < 0 or n > 0xFFFFFFFF:
                    raise ValueError
            except ValueError:
                raise FlagError(f"invalid value {val} for {key}") from None
            m[key] = n
        elif key == "env":
            m["env"] = val
        else:
            raise FlagError(with_suggestion(f"unexpected key '{key}' in '{fld}'", key, _MOUNT_KEYS, True))
    mount = RunMount(**m)
    return _validate_mount(mount, ro_auto)


def _validate_mount(m: RunMount, ro_auto: bool) -> RunMount:
    import dataclasses
    if m.type not in ("secret", "ssh", "cache"):
        for attr in ("mode", "uid", "gid"):
            if getattr(m, attr) is not None:
                raise FlagError(f'{attr} not allowed for "{m.type}" type mounts')
    if ro_auto:
        m = dataclasses.replace(m, readonly=m.type not in ("cache", "tmpfs"))
    if m.type == "secret":
        if m.from_:
            raise FlagError("secret mount should not have a from")
        if m.sharing:
            raise FlagError("secret mount should not define sharing")
        if not m.source and not m.target and not m.cache_id and m.env is None:
            raise FlagError("invalid secret mount. one of source, target required")
        if m.source and m.cache_id:
            raise FlagError("both source and id can't be set")
    elif m.env is not None:
        raise FlagError(f"unexpected key 'env' for mount type '{m.type}'")
    if m.sharing and m.type != "cache":
        raise FlagError(f"invalid cache sharing set for {m.type} mount")
    return m


def parse_device(value: str) -> Device:
    """`RUN --device=<name>[,required[=bool]]` (labs)."""
    name, required = "", False
    for fld in next(csv.reader([value])):
        key, eq, val = fld.partition("=")
        if key == "required":
            if not eq:
                required = True
            else:
                try:
                    required = _parse_go_bool(val)
                except ValueError:
                    raise FlagError(f"invalid value for required: {val}") from None
            continue
        if key == "name" and eq:
            fld = val
        if name:
            raise FlagError(f"device name already set to {name}")
        name = fld
    if not name:
        raise FlagError("device name is required")
    return Device(name, required)


# --------------------------------------------------------------------------- EXPOSE


def parse_port_spec(raw: str) -> list[str]:
    """One EXPOSE spec `[ip:][hostPort:]containerPort[-end][/proto]` -> ["80/tcp", ...]."""
    def err(reason: str) -> FlagError:
        return FlagError(f'invalid port: "{_go_quote_inner(raw)}": {reason}')

    parts = raw.split(":")
    if len(parts) == 1:
        ip, host_port, container = "", "", parts[0]
    elif len(parts) == 2:
        ip, host_port, container = "", parts[0], parts[1]
    else:
        ip, host_port, container = ":".join(parts[:-2]), parts[-2], parts[-1]
    port, _, proto = container.partition("/")
    if port == "":
        raise err("no port specified")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise err(f"invalid proto: {proto}")
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise err(f"invalid IP address {ip}")
        ip = ip[1:-1]
    if ip and not _is_ip(ip):
        raise err(f"invalid IP address: {ip}")
    try:
        start, end = _port_range(port)
    except ValueError:
        raise err(f"invalid containerPort: {port}") from None
    if host_port:
        try:
            hstart, hend = _port_range(host_port)
        except ValueError:
            raise err(f"invalid hostPort: {host_port}") from None
        if end - start != hend - hstart and end != start:
            raise err(f"invalid ranges specified for container and host Ports: {port} and {host_port}")
    return [f"{p}/{proto}" for p in range(start, end + 1)]


def parse_port_specs(specs: list[str] | tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for s in specs:
        out.extend(parse_port_spec(s))
    return out


def _port_range(text: str) -> tuple[int, int]:
    if not text:
        raise ValueError("empty")
    if "-" not in text:
        p = _port(text)
        return p, p
    a, sep, b = text.partition("-")
    if "-" in b:
        raise ValueError(text)
    start, end = _port(a), _port(b)
    if end < start:
        raise ValueError(text)
    return start, end


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ValueError(text)
    n = int(text)
    if n > 65535:
        raise ValueError(text)
    return n


def _is_ip(text: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _go_quote_inner(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


# --------------------------------------------------------------------------- parse_instruction


def _at_least_one(cmd: str) -> FlagError:
    return FlagError(f"{cmd} requires at least one argument")


def _exactly_one(cmd: str) -> FlagError:
    return FlagError(f"{cmd} requires exactly one argument")


def _no_dest(cmd: str) -> FlagError:
    return FlagError(f"{cmd} requires at least two arguments, but only one was provided. "
                     "Destination could not be determined")


_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")


def parse_instruction(node: Node, filename: str = "Dockerfile",
                      source_lines: tuple[str, ...] = ()) -> AnyInstruction:
    """Convert one parser node to its typed instruction, or raise a DockerfileError that
    points at the node's lines."""
    try:
        return _parse(node)
    except FlagError as e:
        raise DockerfileError(str(e), filename=filename, line=node.start_line,
                              source_lines=_node_lines(node, source_lines)) from None


def _node_lines(node: Node, source_lines: tuple[str, ...]) -> tuple[str, ...]:
    if not source_lines or node.start_line <= 0:
        return ()
    return tuple(source_lines[node.start_line - 1:max(node.end_line, node.start_line)])


def _parse(node: Node) -> AnyInstruction:
    kw = node.keyword.lower()
    fn = _PARSERS.get(kw)
    if fn is None:
        raise FlagError(with_suggestion(f"unknown instruction: {_original_keyword(node)}",
                                        node.keyword, [n.upper() for n in INSTRUCTION_NAMES]))
    return fn(node, BFlags(node.flags), list(node.args))


def _original_keyword(node: Node) -> str:
    """The instruction word as the user wrote it (the AST keyword is lowercased)."""
    text = (node.original or "").lstrip()
    word = re.split(r"\s", text, maxsplit=1)[0] if text else ""
    return word if word.lower() == node.keyword.lower() else node.keyword


def _kvps(args: list[str], cmd: str) -> tuple[KeyValue, ...]:
    if not args:
        raise _at_least_one(cmd)
    if len(args) % 3 != 0:
        raise FlagError(f"Bad input to {cmd}, too many arguments")
    out = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise FlagError(f"{cmd} names can not be blank")
        out.append(KeyValue(args[i], args[i + 1], args[i + 2] == ""))
    return tuple(out)


def _p_env(node, flags, args):
    flags.parse()
    return Env(_kvps(args, "ENV"), node=node)


def _p_label(node, flags, args):
    flags.parse()
    return Label(_kvps(args, "LABEL"), node=node)


def _p_maintainer(node, flags, args):
    if len(args) != 1:
        raise _exactly_one("MAINTAINER")
    flags.parse()
    return Maintainer(args[0], node=node)


def _sources_and_dest(node: Node, args: list[str], cmd: str):
    srcs, dest = args[:-1], args[-1]
    if parse_heredoc_word(dest) is not None:
        raise FlagError(f"{cmd} cannot accept a heredoc as a destination")
    by_name = {h.name: h for h in (node.heredocs or ())}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for src in srcs:
        hd = parse_heredoc_word(src) if not node.json_form else None
        if hd is not None:
            h = by_name.get(hd.name)
            data = h.content if h is not None else ""
            if hd.chomp:
                data = chomp_heredoc(data)
            contents.append(SourceContent(hd.name, data, hd.expand))
        else:
            paths.append(src)
    return tuple(paths), dest, tuple(contents)


def _p_add(node, flags, args):
    if len(args) < 2:
        raise _no_dest("ADD")
    chown = flags.add_string("chown")
    chmod = flags.add_string("chmod")
    link = flags.add_bool("link")
    keep_git = flags.add_bool("keep-git-dir")
    checksum = flags.add_string("checksum")
    exclude = flags.add_strings("exclude")
    unpack = flags.add_bool("unpack")
    flags.parse()
    paths, dest, contents = _sources_and_dest(node, args, "ADD")
    return Add(paths, dest, contents, chown=chown.value, chmod=chmod.value, link=link.is_true,
               keep_git_dir=keep_git.is_true if keep_git.used else None,
               checksum=checksum.value, excludes=tuple(exclude.values),
               unpack=unpack.is_true if unpack.used else None, node=node)


def _p_copy(node, flags, args):
    if len(args) < 2:
        raise _no_dest("COPY")
    chown = flags.add_string("chown")
    from_ = flags.add_string("from")
    chmod = flags.add_string("chmod")
    link = flags.add_bool("link")
    parents = flags.add_bool("parents")
    exclude = flags.add_strings("exclude")
    flags.parse()
    paths, dest, contents = _sources_and_dest(node, args, "COPY")
    return Copy(paths, dest, contents, from_=from_.value, chown=chown.value, chmod=chmod.value,
                link=link.is_true, parents=parents.is_true, excludes=tuple(exclude.values),
                node=node)


def _p_from(node, flags, args):
    if len(args) == 3 and args[1].lower() == "as":
        stage = args[2].lower()
        if not _STAGE_NAME.match(stage):
            raise FlagError(f'invalid name for build stage: "{_go_quote_inner(args[2])}", '
                            "name can't start with a number or contain symbols")
    elif len(args) != 1:
        raise FlagError("FROM requires either one or three arguments")
    else:
        stage = ""
    platform = flags.add_string("platform")
    flags.parse()
    return From(args[0], stage, platform.value, _doc_comment(node, stage), node=node)


def _doc_comment(node: Node, name: str) -> str:
    """BuildKit's getComment: the text after `<name> ` of the first comment line above
    the instruction that starts with the name being defined."""
    if not name:
        return ""
    for line in getattr(node, "comments", ()) or ():
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    return ""


def _p_onbuild(node, flags, args):
    nested = node.next
    if nested is not None:
        trigger = nested.keyword.upper()
    elif args:
        trigger = args[0].strip().upper()
    else:
        raise _at_least_one("ONBUILD")
    flags.parse()
    if trigger == "ONBUILD":
        raise FlagError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise FlagError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original or "", count=1)
    heredocs = node.heredocs or (nested.heredocs if nested is not None else ())
    for h in heredocs or ():
        expression += "\n" + h.content + h.name
    return Onbuild(expression, trigger, node=node)


def _p_workdir(node, flags, args):
    if len(args) != 1:
        raise _exactly_one("WORKDIR")
    flags.parse()
    return Workdir(args[0], node=node)


def _shell_files(node: Node) -> tuple[ShellInlineFile, ...]:
    return tuple(ShellInlineFile(h.name, h.content, h.chomp) for h in (node.heredocs or ()))


def _p_run(node, flags, args):
    mount = flags.add_strings("mount")
    network = flags.add_string("network")
    security = flags.add_string("security")
    flags.parse()
    for spec in mount.values:  # validate early (and reject `from=$VAR`); expanded at dispatch
        parse_mount(spec, None)
    if network.used and network.value not in ("default", "none", "host"):
        raise FlagError(f'unsupported network mode "{network.value}"')
    if security.used and security.value not in ("sandbox", "insecure"):
        raise FlagError(f'unsupported security mode "{security.value}"')
    cmd = handle_json_args(args, node.json_form)
    return Run(tuple(cmd), not node.json_form, _shell_files(node), tuple(mount.values),
               network.value, security.value, tuple(flags.used()), node=node)


def _p_cmd(node, flags, args):
    flags.parse()
    cmd = handle_json_args(args, node.json_form)
    return Cmd(tuple(cmd), not node.json_form, _shell_files(node), node=node)


def _p_entrypoint(node, flags, args):
    flags.parse()
    cmd = handle_json_args(args, node.json_form)
    return Entrypoint(tuple(cmd) if cmd else None, not node.json_form, _shell_files(node),
                      node=node)


def _opt_interval(flag: Flag) -> int:
    if flag.value == "":
        return 0
    ns = parse_go_duration(flag.value)
    if ns == 0:
        return 0
    if ns < 1_000_000:
        raise FlagError(f'Interval "{flag.name}" cannot be less than 1ms')
    return ns


def _p_healthcheck(node, flags, args):
    if not args:
        raise _at_least_one("HEALTHCHECK")
    typ = args[0].upper()
    rest = args[1:]
    if typ == "NONE":
        if rest:
            raise FlagError("HEALTHCHECK NONE takes no arguments")
        flags.parse()
        return Healthcheck(HealthConfig(("NONE",)), node=node)
    interval = flags.add_string("interval")
    timeout = flags.add_string("timeout")
    start_period = flags.add_string("start-period")
    start_interval = flags.add_string("start-interval")
    retries = flags.add_string("retries")
    flags.parse()
    if typ != "CMD":
        raise FlagError(f'Unknown type "{_go_quote_inner(typ)}" in HEALTHCHECK (try CMD)')
    cmd = handle_json_args(rest, node.json_form)
    if not cmd:
        raise FlagError("Missing command after HEALTHCHECK CMD")
    test = ("CMD" if node.json_form else "CMD-SHELL",) + tuple(cmd)
    n_retries = 0
    if retries.value != "":
        try:
            n_retries = int(retries.value, 10)
        except ValueError:
            raise FlagError(f'strconv.ParseInt: parsing "{_go_quote_inner(retries.value)}": '
                            "invalid syntax") from None
        if n_retries < 0:
            raise FlagError(f"--retries cannot be negative ({n_retries})")
    return Healthcheck(HealthConfig(test, _opt_interval(interval), _opt_interval(timeout),
                                    _opt_interval(start_period), _opt_interval(start_interval),
                                    n_retries), node=node)


def _p_expose(node, flags, args):
    if not args:
        raise _at_least_one("EXPOSE")
    flags.parse()
    return Expose(tuple(sorted(args)), node=node)


def _p_user(node, flags, args):
    if len(args) != 1:
        raise _exactly_one("USER")
    flags.parse()
    return User(args[0], node=node)


def _p_volume(node, flags, args):
    if not args:
        raise _at_least_one("VOLUME")
    flags.parse()
    vols = []
    for v in args:
        v = v.strip()
        if not v:
            raise FlagError("VOLUME specified can not be an empty string")
        vols.append(v)
    return Volume(tuple(vols), node=node)


def _p_stopsignal(node, flags, args):
    if len(args) != 1:
        raise _exactly_one("STOPSIGNAL")
    flags.parse()
    return Stopsignal(args[0], node=node)


def _p_arg(node, flags, args):
    if not args:
        raise _at_least_one("ARG")
    flags.parse()
    pairs = []
    for a in args:
        if "=" in a:
            k, _, v = a.partition("=")
            if not k:
                raise FlagError("ARG names can not be blank")
            pairs.append(ArgPair(k, v, _doc_comment(node, k)))
        else:
            pairs.append(ArgPair(a, None, _doc_comment(node, a)))
    return Arg(tuple(pairs), node=node)


def _p_shell(node, flags, args):
    flags.parse()
    shell = handle_json_args(args, node.json_form)
    if not shell:
        raise _at_least_one("SHELL")
    if not node.json_form:
        raise FlagError("SHELL requires the arguments to be in JSON form")
    return Shell(tuple(shell), node=node)


_PARSERS: dict[str, Callable] = {
    "env": _p_env, "maintainer": _p_maintainer, "label": _p_label, "add": _p_add,
    "copy": _p_copy, "from": _p_from, "onbuild": _p_onbuild, "workdir": _p_workdir,
    "run": _p_run, "cmd": _p_cmd, "healthcheck": _p_healthcheck, "entrypoint": _p_entrypoint,
    "expose": _p_expose, "user": _p_user, "volume": _p_volume, "stopsignal": _p_stopsignal,
    "arg": _p_arg, "shell": _p_shell,
}
