"""Where rules text came from: words with their columns, and errors that point at them.

A line is split into words twice at most. The reader splits it without columns
(:func:`split`: for the usual line, :meth:`str.split` does the work) and names a word by its
index. Only when something is wrong does :func:`error_at` split the line again, this time
keeping each word's column, so that the :class:`RulesParseError` can show the line with a
caret under the offending word. Columns cost nothing for the 20,000 lines that are fine.
"""

from __future__ import annotations

import re

from meshlab.errors import MeshlabError

BLANK = " \t\r\v\f"
"""What separates words on a line (iptables-restore splits on these, never on newlines)."""

END = 1 << 30
"""A token index past the end of any line: the error then points after the last word."""


class RulesParseError(MeshlabError):
    """Rules text that iptables would refuse (or that this model does not know).

    ``line`` and ``column`` are 1-based; ``token`` is the offending word ("" at end of input).
    ``model_limit`` is true when iptables itself would take the input and only this model does
    not (a host name to look up, a non-contiguous netmask): the message then says so.
    """

    def __init__(self, message: str, *, line: int, column: int, token: str, hint: str,
                 source: str = "", model_limit: bool = False) -> None:
        self.line, self.column, self.token, self.hint = line, column, token, hint
        self.reason, self.model_limit = message, model_limit
        text = f"line {line}, column {column}: {_clip(message, _MESSAGE_WIDTH)}"
        if source:
            excerpt, caret = _excerpt(source, column)
            text += f"\n    {excerpt}\n    {' ' * caret}^"
        text += f"\n  fix: {_clip(hint, _MESSAGE_WIDTH)}"
        super().__init__(text)


_MESSAGE_WIDTH = 400  # a word quoted in a message is clipped past this: a 1 MB token stays readable
_EXCERPT_WIDTH = 120  # how much of the offending line is shown around the caret


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} characters)"


def _excerpt(source: str, column: int) -> tuple[str, int]:
    """The part of a long line around ``column``, and where the caret goes under it."""
    if len(source) <= _EXCERPT_WIDTH:
        return source, column - 1
    start = max(0, min(column - 1 - _EXCERPT_WIDTH // 2, len(source) - _EXCERPT_WIDTH))
    end = start + _EXCERPT_WIDTH
    head = "..." if start else ""
    tail = "..." if end < len(source) else ""
    return f"{head}{source[start:end]}{tail}", len(head) + column - 1 - start


class Bad(Exception):
    """Raised inside a rule with the index of the offending token; turned into a
    :class:`RulesParseError` by :func:`error_at`, by code that knows the line.
    ``model_limit``: iptables would take it, this model does not (see RulesParseError)."""

    def __init__(self, index: int, message: str, hint: str, column: int | None = None, *,
                 model_limit: bool = False) -> None:
        super().__init__(message)
        self.index, self.message, self.hint, self.column = index, message, hint, column
        self.model_limit = model_limit


COMMANDS = ("iptables", "ip6tables", "iptables-legacy", "iptables-nft", "ip6tables-legacy",
            "ip6tables-nft")
"""The first word of a command line (``iptables -t nat -A ...``), after any directory."""


def is_command(word: str) -> bool:
    """Whether ``word``, a line's first, starts an ``iptables ...`` command line ("tables" in
    it: a cheap test first, as almost every line is a rule, not a command)."""
    return "tables" in word and word.rsplit("/", 1)[-1] in COMMANDS


def is_command_line(line: str) -> bool:
    """Whether ``line`` is an ``iptables ...`` command line, as a person types it in a shell
    (not a line of an ``iptables-restore`` document)."""
    words = line.split(None, 1)
    return bool(words) and is_command(words[0])


def split(line: str) -> list[str]:
    """Words of a line: as ``iptables-restore`` reads them (:func:`restore_split`), or as a
    shell does for an ``iptables ...`` command line (see :func:`tokens_with_columns`)."""
    if "tables" in line and is_command_line(line):  # (a scan, no new strings)
        if '"' not in line and "'" not in line and splits_plainly(line):
            return line.split()
        return [tok for tok, _ in _shell_words(line)]
    return restore_split(line)


def splits_plainly(text: str) -> bool:
    """Whether :meth:`str.split` finds the words that splitting at :data:`BLANK` finds:
    ASCII text without the four separator controls ``\\x1c``-``\\x1f``, which it also
    takes for blanks (as it does no-break and other Unicode spaces). iptables does not:
    ``--comment a\\xa0b`` is one word."""
    return (text.isascii() and "\x1c" not in text and "\x1d" not in text
            and "\x1e" not in text and "\x1f" not in text)


def blank_split(text: str) -> list[str]:
    """Words separated by blanks, nothing quoted: how ``iptables-restore`` splits a
    ``*table`` or ``:CHAIN`` line."""
    if splits_plainly(text):
        return text.split()
    return [word for word in _BLANKS.split(text) if word]


_BLANKS = re.compile(f"[{BLANK}]+")


def restore_split(line: str) -> list[str]:
    """Words of a line of an ``iptables-restore`` document (see :func:`tokens_with_columns`).
    Fast paths: no quotes at all, or one ``"..."`` string after a blank (what
    ``iptables-save`` prints for a comment)."""
    if not splits_plainly(line):
        return [tok for tok, _ in _restore_words(line)]
    if '"' not in line:
        return line.split()
    if "\\" not in line:
        parts = line.split('"')
        if len(parts) == 3 and (not parts[0] or parts[0][-1] in BLANK):
            before, quoted, after = parts  # the closing quote ends the word, as always
            out = before.split()
            out.append(quoted)
            out.extend(after.split())
            return out
    return [tok for tok, _ in _restore_words(line)]


def tokens_with_columns(line: str) -> list[tuple[str, int]]:
    """The words of a line with their 1-based start columns, read as the line's reader reads
    them. An ``iptables-restore`` line (``-A ...``): words end at blanks; ``"`` opens a
    quoted part in which ``\\`` takes the next character as it is, and the closing ``"``
    ends the word (``a"b c"d`` is ``ab c`` and ``d``); single quotes are ordinary characters.
    A command line (``iptables ...``) is read as a shell reads it: single quotes quote too,
    and quoted parts glue to what is around them. An unterminated quote raises :class:`Bad`."""
    return _shell_words(line) if is_command_line(line) else _restore_words(line)


def _restore_words(line: str) -> list[tuple[str, int]]:
    """Words as ``iptables-restore`` splits a line (its ``add_param_to_argv``)."""
    out: list[tuple[str, int]] = []
    word: list[str] | None = None
    start = quote_at = 0
    i, n = 0, len(line)
    quoted = False
    while i < n:
        ch = line[i]
        if quoted:
            if ch == "\\" and i + 1 < n:
                word.append(line[i + 1])  # type: ignore[union-attr]
                i += 2
                continue
            if ch == '"':  # the closing quote ends the word
                out.append(("".join(word), start + 1))  # type: ignore[arg-type]
                word, quoted = None, False
            else:
                word.append(ch)  # type: ignore[union-attr]
            i += 1
            continue
        if ch in BLANK:
            if word is not None:
                out.append(("".join(word), start + 1))
                word = None
        else:
            if word is None:
                word, start = [], i
            if ch == '"':
                quoted, quote_at = True, i
            else:
                word.append(ch)
        i += 1
    if quoted:
        raise Bad(len(out), 'unterminated " quote', 'close the quote with "', column=quote_at + 1)
    if word is not None:
        out.append(("".join(word), start + 1))
    return out


def _shell_words(line: str) -> list[tuple[str, int]]:
    """Words as a shell splits a command line (double quotes with ``\\`` escapes, single
    quotes verbatim, quoted parts glued to their neighbours)."""
    out: list[tuple[str, int]] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in BLANK:
            i += 1
            continue
        start, word = i, []
        while i < n and line[i] not in BLANK:
            ch = line[i]
            if ch in "\"'":
                close = i + 1
                while close < n and line[close] != ch:
                    if ch == '"' and line[close] == "\\" and close + 1 < n:
                        word.append(line[close + 1])
                        close += 2
                        continue
                    word.append(line[close])
                    close += 1
                if close >= n:
                    raise Bad(len(out), f"unterminated {ch} quote", f"close the quote with {ch}",
                              column=i + 1)
                i = close + 1
            else:
                word.append(ch)
                i += 1
        out.append(("".join(word), start + 1))
    return out


def error_at(bad: Bad, lineno: int, raw: str, offset: int = 0) -> RulesParseError:
    """The user-facing error for ``bad`` on line ``lineno`` (text ``raw``): only now are the
    words' columns worked out. ``offset`` is added to the token index (a ``[p:b]`` prefix)."""
    try:
        cols = tokens_with_columns(raw)
    except Bad:
        cols = []
    index = bad.index + offset
    if bad.column is not None:
        token, column = raw[bad.column - 1:].split(None, 1)[0], bad.column
    elif index < len(cols):
        token, column = cols[index]
    else:
        token, column = "", len(raw.rstrip(BLANK)) + 1
    return RulesParseError(bad.message, line=lineno, column=column, token=token, hint=bad.hint,
                           source=raw.rstrip(BLANK), model_limit=bad.model_limit)

