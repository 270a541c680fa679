"""What the build checks are and how they are switched: BuildKit's rules, the warning and
result values, and the `# check=` / BUILDKIT_DOCKERFILE_CHECK configuration.

The checker that applies them to a Dockerfile lives in checks.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from frontends.dockerfile.shell import go_quote
from pybuild.errors import DefinitionError


# --------------------------------------------------------------------------- rules


def rule_url(name: str) -> str:
    """`JSONArgsRecommended` -> .../rule/json-args-recommended/ (acronyms stay one word)."""
    kebab = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()
    return f"https://docs.docker.com/go/dockerfile/rule/{kebab}/"


@dataclass(frozen=True)
class Rule:
    """A check rule: its name, the description its warnings show, and whether it is
    experimental."""

    name: str
    description: str
    experimental: bool = False

    @property
    def url(self) -> str:
        return rule_url(self.name)


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {r.name: r for r in rules}


RULES: dict[str, Rule] = _rules(
    Rule("StageNameCasing", "Stage names should be lowercase"),
    Rule("FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword"),
    Rule("NoEmptyContinuation", "Empty continuation lines will become errors in a future release"),
    Rule("ConsistentInstructionCasing",
         "All commands within the Dockerfile should use the same casing (either upper or lower)"),
    Rule("DuplicateStageName", "Stage names should be unique"),
    Rule("ReservedStageName", "Reserved words should not be used as stage names"),
    Rule("JSONArgsRecommended",
         "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior "
         "related to OS signals"),
    Rule("MaintainerDeprecated",
         "The MAINTAINER instruction is deprecated, use a label instead to define an image author"),
    Rule("UndefinedArgInFrom", "FROM command must use declared ARGs"),
    Rule("WorkdirRelativePath",
         "Relative workdir without an absolute workdir declared within the build can have "
         "unexpected results if the base image changes"),
    Rule("UndefinedVar", "Variables should be defined before their use"),
    Rule("MultipleInstructionsDisallowed",
         "Multiple instructions of the same type should not be used in the same stage"),
    Rule("LegacyKeyValueFormat",
         "Legacy key/value format with whitespace separator should not be used"),
    Rule("InvalidBaseImagePlatform", "Base image platform does not match expected target platform"),
    Rule("RedundantTargetPlatform",
         "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the "
         "default behavior"),
    Rule("SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV commands"),
    Rule("InvalidDefaultArgInFrom",
         "Default value for global ARG results in an empty or invalid base image name"),
    Rule("FromPlatformFlagConstDisallowed", "FROM --platform flag should not use a constant value"),
    Rule("CopyIgnoredFile", "Attempting to Copy file that is excluded by .dockerignore"),
    Rule("InvalidDefinitionDescription",
         "Comment for build stage or argument should follow the format: "
         "`# <arg/stage name> <description>`. If this is not intended to be a description "
         "comment, add an empty line or comment between the instruction and the comment.",
         experimental=True),
    Rule("ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase"),
    Rule("ExposeInvalidFormat",
         "IP address and host-port mapping should not be used in EXPOSE instruction. This will "
         "become an error in a future release"),
)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Warning:  # noqa: A001 - BuildKit's name; shadows the builtin only in this module
    """One rule violation. `line`/`end_line` are 1-based (0: not tied to a line)."""

    rule: str
    detail: str
    line: int
    description: str
    url: str
    level: int = 1
    end_line: int = 0

    @property
    def short(self) -> str:
        """BuildKit's short form: `Rule: detail (line N)`."""
        where = f" (line {self.line})" if self.line > 0 else ""
        return f"{self.rule}: {self.detail}{where}"

    def __str__(self) -> str:
        return self.short


class CheckOptionError(DefinitionError):
    """The `# check=` directive or BUILDKIT_DOCKERFILE_CHECK cannot be parsed."""


class LintViolation(DefinitionError):
    """`check=error=true` and at least one rule fired."""

    def __init__(self, rules: list[str], warnings: tuple[Warning, ...] = (),
                 filename: str = "", line: int = 0, source_lines: tuple[str, ...] = ()):
        super().__init__("lint violation found for rules: " + ", ".join(rules),
                         filename=filename, line=line, source_lines=source_lines)
        self.rules = tuple(rules)
        self.warnings = warnings

    def render(self) -> str:
        return "\n".join([super().render()] + [f" - {w.short}" for w in self.warnings])


@dataclass(frozen=True)
class CheckConfig:
    """Parsed check options (`skip=...;error=...;experimental=...`)."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False
    error: bool = False

    @classmethod
    def parse(cls, text: str) -> "CheckConfig":
        text = text.strip()
        if not text:
            return cls()
        skip: frozenset[str] = frozenset()
        exp: frozenset[str] = frozenset()
        skip_all = exp_all = error = False
        for part in text.split(";"):
            key, sep, value = part.partition("=")
            if not sep:
                raise CheckOptionError(f"invalid check option {go_quote(part)}")
            key, value = key.strip(), value.strip()
            if key == "skip":
                skip_all = value == "all"
                skip = frozenset() if skip_all else frozenset(v.strip() for v in value.split(","))
            elif key == "experimental":
                exp_all = value == "all"
                exp = frozenset() if exp_all else frozenset(v.strip() for v in value.split(","))
            elif key == "error":
                error = _parse_go_bool(value, part)
            else:
                raise CheckOptionError(f"invalid check option {go_quote(key)}")
        return cls(skip, skip_all, exp, exp_all, error)

    def enabled(self, rule: Rule) -> bool:
        # Experimental rules run only when asked for; `skip=all` does not touch them
        # (BuildKit's Linter.Run does the same).
        if rule.experimental:
            return self.experimental_all or rule.name in self.experimental
        return not self.skip_all and rule.name not in self.skip


def _parse_go_bool(value: str, part: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise CheckOptionError(f"failed to parse check option {go_quote(part)}: "
                           f"strconv.ParseBool: parsing {go_quote(value)}: invalid syntax")


@dataclass(frozen=True)
class CheckResult:
    """Warnings in the order found, plus the definition error that stopped the checks
    (BuildKit reports the warnings found before an error, then the error)."""

    warnings: tuple[Warning, ...]
    config: CheckConfig = field(default_factory=CheckConfig)
    error: Optional[DefinitionError] = None
    parse_error: bool = False  # `error` came from turning a node into an instruction

    @property
    def error_text(self) -> str:
        """The error as BuildKit words it ("dockerfile parse error on line N: ...")."""
        if self.error is None:
            return ""
        msg = getattr(self.error, "message", str(self.error))
        if self.parse_error and self.error.line:
            return f"dockerfile parse error on line {self.error.line}: {msg}"
        return msg

    def violation(self, filename: str = "Dockerfile",
                  lines: tuple[str, ...] = ()) -> Optional[LintViolation]:
        """The error `check=error=true` asks for, or None."""
        if not self.config.error or not self.warnings:
            return None
        rules = sorted({w.rule for w in self.warnings})
        first = self.warnings[0]
        shown = tuple(lines[first.line - 1:max(first.end_line, first.line)]) if (
            lines and first.line > 0) else ()
        return LintViolation(rules, self.warnings, filename, first.line, shown)


IsIgnored = Callable[[str], bool]
