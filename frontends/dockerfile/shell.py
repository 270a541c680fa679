"""Shell-word lexer of the Dockerfile frontend: BuildKit's `shell.Lex` semantics.

Owns variable expansion (`$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`,
`${v?m}`, `${v:?m}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`,
`${v//p/r}`), quote removal and escape processing of one word, and word splitting
(`process_words`). This is what ARG/ENV values feed through in FROM, COPY, ENV,
WORKDIR, ... It is *not* a shell: no command substitution, no globbing, no `${v:=w}`.

`process_word_with_matches` also reports which names a word referenced that were set
(matched) and unset (unmatched): the compiler uses that to know which ARGs a step
actually used, so an unused ARG does not bust the cache.

The modes BuildKit uses internally (keep quotes, keep escapes, leave unset variables
as written, skip quote processing) are keyword-only options of `ShellLexer`; the
parser uses them to find heredoc openers, the compiler to expand heredoc bodies.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["ShellLexer", "ShellExpansionError", "go_quote", "is_go_space"]


class ShellExpansionError(ValueError):
    """A word could not be expanded (bad `${...}` syntax, unterminated quote,
    `${v:?message}` on an unset/empty variable, bad pattern)."""


# Go's unicode.IsSpace: Latin-1 space characters plus the Unicode White_Space set.
_LATIN1_SPACE = frozenset("\t\n\v\f\r \x85\xa0")


def is_go_space(ch: str) -> bool:
    """Go's `unicode.IsSpace` for one character."""
    if ord(ch) < 0x100:
        return ch in _LATIN1_SPACE
    return ch.isspace()


def go_quote(s: str) -> str:
    """Go's `strconv.Quote`: the text BuildKit shows in AST dumps and error messages."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == " " or (o >= 0x20 and ch.isprintable() and o != 0x7F):
            out.append(ch)
        elif ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:
            # a byte that was not UTF-8, smuggled in by errors="surrogateescape"
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


_GO_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                     "\t": "\\t", "\v": "\\v"}

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_REGEX_SPECIALS = frozenset("[]{}.+()|^$")


class _Error(Exception):
    """Internal: an expansion error before it is wrapped with the source word."""


class _Words:
    """Accumulates the words of `process_words`: whitespace from unquoted text and
    from variable values splits, quoted text and escaped characters never do."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if is_go_space(ch):
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        if s:  # an empty quoted string marks a word but adds no text
            self.buf.append(s)
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False
        return self.words


class _ShellWord:
    """One run of the lexer over one source word (a scanner plus the options)."""

    def __init__(self, lexer: "ShellLexer", source: str, env: Mapping[str, str]):
        self.lex = lexer
        self.src = source
        self.pos = 0
        self.env = env
        self.raw_escapes = lexer.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # --- scanner -------------------------------------------------------------
    def peek(self) -> str | None:
        return self.src[self.pos] if self.pos < len(self.src) else None

    def next(self) -> str | None:
        if self.pos < len(self.src):
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return None

    # --- environment ---------------------------------------------------------
    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    # --- grammar -------------------------------------------------------------
    def process_stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        esc = self.lex.escape_token
        saved_raw = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            while (ch := self.peek()) is not None:
                if stop is not None and ch == stop:
                    self.next()
                    return "".join(result), words.get_words()
                if ch == "$":
                    tmp = self.process_dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif ch in "'\"" and not self.lex.skip_process_quotes:
                    tmp = self.process_single_quote() if ch == "'" else self.process_double_quote()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                elif ch == "<" and self.lex.heredoc_words:
                    tmp = self.process_possible_heredoc()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                else:
                    ch = self.next()
                    if ch == esc:
                        if self.raw_escapes:
                            words.add_raw_char(ch)
                            result.append(ch)
                        ch = self.next()
                        if ch is None:  # a lone escape at the end is dropped
                            break
                        words.add_raw_char(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
        finally:
            self.raw_escapes = saved_raw
        if stop is not None:
            raise _Error(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def process_single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        result: list[str] = []
        ch = self.next()
        if self.lex.raw_quotes:
            result.append(ch)
        while True:
            ch = self.next()
            if ch is None:
                raise _Error("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def process_double_quote(self) -> str:
        # Literal except $ expansions; the escape token escapes only " $ and itself.
        result: list[str] = []
        esc = self.lex.escape_token
        ch = self.next()
        if self.lex.raw_quotes:
            result.append(ch)
        while True:
            p = self.peek()
            if p is None:
                raise _Error("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                ch = self.next()
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if p == "$":
                result.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == esc:
                if self.raw_escapes:
                    result.append(ch)
                p = self.peek()
                if p is None:
                    continue  # a lone escape at the end of the word is dropped
                if p in ('"', "$", esc):
                    ch = self.next()
            result.append(ch)

    def process_possible_heredoc(self) -> str:
        # `<<` swallows the blanks after it so that `<<  EOF` stays one word.
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        spaces: list[str] = []
        while (p := self.peek()) is not None and p in " \t\r\n":
            spaces.append(self.next())
        return "<<" + "".join(spaces)

    def process_dollar(self) -> str:
        self.next()  # $
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "$" + name
            return value

        self.next()  # {
        p = self.peek()
        if p is None:
            raise _Error("syntax error: missing '}'")
        if p in "{}:":
            raise _Error("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        if ch is None:
            raise _Error("syntax error: missing '}'")
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self._substitute(name)
        chs = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            if ch is None:
                raise _Error("syntax error: missing '}'")
            chs += ch
        elif ch not in "+-?#%":
            raise _Error(f"unsupported modifier ({chs}) in substitution")

        pattern_op = ch in "#%"
        if null_is_unset and pattern_op:
            raise _Error(f"unsupported modifier ({chs}) in substitution")
        word = self._stop_on_brace(pattern_op)
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${" + name + chs + word + "}"
        empty = not is_set or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not is_set:
                raise _Error(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _Error(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in "#%":
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise _Error(f"unsupported modifier ({chs}) in substitution")

    def _stop_on_brace(self, raw_escapes: bool) -> str:
        try:
            word, _ = self.process_stop_on("}", raw_escapes)
        except _Error:
            if self.peek() is None:
                raise _Error("syntax error: missing '}'") from None
            raise
        return word

    def _substitute(self, name: str) -> str:
        # ${name/pattern/replacement} and ${name//pattern/replacement}
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.process_stop_on("/", True)
        except _Error:
            if self.peek() is None:
                raise _Error("syntax error: missing '/' in ${}") from None
            raise
        replacement = self._stop_on_brace(True)
        value, is_set = self.get_env(name)
        if self.lex.skip_unset_env and not is_set:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _pattern_to_regex(pattern, greedy=True, anchored=False)
        # replacement text is literal (no group references)
        return regex.sub(lambda _m: replacement, value, count=0 if replace_all else 1)

    def process_name(self) -> str:
        # A name is [letter|digit|_]+; a leading digit run is one positional
        # parameter ($001 -> "001"); a special parameter is a single character.
        name: list[str] = []
        while (ch := self.peek()) is not None:
            if not name and ch.isdecimal():
                while (d := self.peek()) is not None and d.isdecimal():
                    name.append(self.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name.append(self.next())
        return "".join(name)


def _pattern_to_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell pattern of `${v#p}`/`${v%p}`/`${v/p/r}` as a regex: `*` any string
    (shortest unless greedy), `?` one character, `\\` escapes `* ? \\` (and is dropped
    before `}` and `/`); no bracket expressions."""
    out: list[str] = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i, n = 0, len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            if i < n and pattern[i] in "}/":
                continue  # escape needed only to get } or / through ${...}
            if i >= n:
                raise _Error(f"invalid pattern ({pattern}) in substitution: invalid escape '\\'")
            tok = pattern[i]
            i += 1
            if tok not in "*?\\":
                raise _Error(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{tok}'")
            out.append(re.escape(tok))
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern_to_regex(pattern, greedy, anchored=True).match(value)
    return value[m.end():] if m else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each `\\x` escape in front of its character."""
    tokens: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "\\" and i + 1 < n:
            tokens.append(pattern[i:i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex finds the leftmost match; the shortest *suffix* is the leftmost match
    # of the reversed pattern in the reversed value.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


class ShellLexer:
    """BuildKit's shell lexer for Dockerfile words.

    `escape_token` is `\\` or `` ` `` (the Dockerfile's `# escape=` directive).
    Keyword options (BuildKit's internal modes): `raw_quotes` keeps quote characters,
    `raw_escapes` keeps escape characters, `skip_unset_env` leaves references to unset
    variables as written, `skip_process_quotes` treats quotes as plain text (heredoc
    bodies), `heredoc_words` keeps `<<  WORD` together as one word.
    """

    def __init__(self, escape_token: str = "\\", *, raw_quotes: bool = False,
                 raw_escapes: bool = False, skip_unset_env: bool = False,
                 skip_process_quotes: bool = False, heredoc_words: bool = False):
        if len(escape_token) != 1:
            raise ValueError(f"escape token must be one character, got {escape_token!r}")
        self.escape_token = escape_token
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset_env = skip_unset_env
        self.skip_process_quotes = skip_process_quotes
        self.heredoc_words = heredoc_words

    def _run(self, word: str, env: Mapping[str, str]) -> tuple[str, list[str], _ShellWord]:
        sw = _ShellWord(self, word, env)
        try:
            result, words = sw.process_stop_on(None, self.raw_escapes)
        except _Error as e:
            raise ShellExpansionError(f"failed to process {go_quote(word)}: {e}") from None
        return result, words, sw

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand variables, remove quotes, apply escapes; one string, no splitting."""
        return self._run(word, env)[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Like `process_word`, then split at unquoted whitespace (including
        whitespace that came from unquoted variable values)."""
        return self._run(word, env)[1]

    def process_word_with_matches(self, word: str, env: Mapping[str, str]
                                  ) -> tuple[str, set[str], set[str]]:
        """`process_word` plus the referenced names that were set (matched) and
        unset (unmatched)."""
        result, _, sw = self._run(word, env)
        return result, sw.matched, sw.unmatched
