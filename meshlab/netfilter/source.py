"""Where rules text came from: words with their columns, and errors that point at them.

Parsing is done in two passes over the evidence. The fast path reads a line with
:meth:`str.split` and never looks at columns. Only when something is wrong does
:func:`error_at` split the line again, this time keeping each word's column, so the
:class:`RulesParseError` can show the line with a caret under the offending word. Columns
cost nothing for the 20,000 lines that are fine.
"""

from __future__ import annotations

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


def split(line: str) -> list[str]:
    """Words of a line. Fast paths: no quotes at all, or simple ``"..."`` strings standing
    alone (what ``iptables-save`` prints for comments); anything else takes the slow path."""
    if '"' not in line and "'" not in line:
        return line.split()
    if "'" not in line and "\\" not in line:
        parts = line.split('"')
        if len(parts) == 3:  # one quoted word, the usual comment: the loop below, unrolled
            before, quoted, after = parts
            if (not before or before[-1] in BLANK) and (not after or after[0] in BLANK):
                out = before.split()
                out.append(quoted)
                out.extend(after.split())
                return out
        last = len(parts) - 1
        if last % 2 == 0:
            out: list[str] = []
            for k, part in enumerate(parts):
                if k % 2:
                    out.append(part)
                elif (0 < k < last and not part) or (
                        part and ((k > 0 and part[0] not in BLANK)
                                  or (k < last and part[-1] not in BLANK))):
                    break  # a quote glued to other characters: let the slow path decide
                else:
                    out.extend(part.split())
            else:
                return out
    return [tok for tok, _ in tokens_with_columns(line)]


def tokens_with_columns(line: str) -> list[tuple[str, int]]:
    """Shell-like words with their 1-based start columns (double quotes with ``\\`` escapes,
    single quotes verbatim). An unterminated quote raises :class:`Bad`."""
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
