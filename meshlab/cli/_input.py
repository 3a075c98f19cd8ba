"""Reading a file (or standard input) named on the command line, safely and with clear errors.

Every ``meshlab`` sub-command that reads a document (``trace --rules FILE``, ``inject POD.yaml``)
goes through :func:`read_text`, which turns each way reading can go wrong into one
:class:`~meshlab.errors.MeshlabError` that says what, where and how to fix it:

- the path does not exist, is a directory, or cannot be opened;
- the file is bigger than the command will read (the bound keeps a wrong file, say a disk image
  or ``/dev/zero``, from taking minutes or all the memory: nothing hangs);
- the bytes are not UTF-8 text: UTF-16/UTF-32 (a byte-order mark, as Windows tools write),
  or binary data, located by line and column;
- the text holds control characters (a NUL byte, an escape sequence) that no iptables dump or
  YAML manifest contains, located by line and column, so they never reach the terminal raw.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from typing import BinaryIO

from meshlab.errors import MeshlabError

#: Byte-order marks of encodings people end up with by accident (PowerShell's ``>`` writes
#: UTF-16). UTF-32 first: its little-endian mark starts with UTF-16's.
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
#: Control characters no iptables dump or manifest holds (tab, newline and CR are fine).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _position(data: bytes | str, offset: int) -> tuple[int, int]:
    """Line and column (both 1-based; the column counts bytes/characters) of ``offset``."""
    newline = b"\n" if isinstance(data, bytes) else "\n"
    line = data.count(newline, 0, offset) + 1
    start = data.rfind(newline, 0, offset) + 1
    return line, offset - start + 1


def _read_bytes(path: str, limit: int, what: str) -> bytes | str:
    """At most ``limit + 1`` bytes of ``path`` (``-``: standard input)."""
    if path == "-":
        stream = sys.stdin
        if stream is None:
            raise MeshlabError(f"{what}: there is no standard input to read; give a file path")
        if stream.isatty():
            print(f"(reading {what} from standard input; end with Ctrl-D)", file=sys.stderr)
        buffer: BinaryIO | None = getattr(stream, "buffer", None)
        if buffer is not None:
            return buffer.read(limit + 1)
        return stream.read(limit + 1)  # a text stream without bytes (tests use StringIO)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MeshlabError(f"cannot read {what} {path!r}: no such file; check the path, or "
                           "give - to read standard input") from None
    except OSError as error:
        raise MeshlabError(f"cannot read {what} {path!r}: {error.strerror}; check the path, or "
                           "give - to read standard input") from None
    if stat.S_ISDIR(info.st_mode):
        raise MeshlabError(f"{what} {path!r} is a directory; give the path of a file in it")
    if stat.S_ISREG(info.st_mode) and info.st_size > limit:
        raise _too_big(what, path, info.st_size, limit)
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as error:
        raise MeshlabError(f"cannot read {what} {path!r}: {error.strerror}; check the path and "
                           "its permissions") from None


def _too_big(what: str, path: str, size: int | None, limit: int) -> MeshlabError:
    shown = f"is {_megabytes(size)}" if size is not None else f"is over {_megabytes(limit)}"
    name = "on standard input" if path == "-" else repr(path)
    return MeshlabError(f"{what} {name} {shown}; meshlab reads at most {_megabytes(limit)} "
                        f"here. Check that it is the right file, or cut it down to the part "
                        f"you need")


def read_text(path: str, *, what: str, limit: int, hint: str,
              max_line: int | None = None) -> str:
    """The text of ``path`` (``-`` = standard input) as a ``str``, or a MeshlabError.

    ``what`` names the document in messages ("rules file"); ``limit`` is the most bytes read;
    ``hint`` says what the file should hold ("the output of iptables-save"), for the messages
    about binary data and empty files. ``max_line``, when given, is the longest line allowed.
    """
    data = _read_bytes(path, limit, what)
    name = "on standard input" if path == "-" else repr(path)
    if len(data) > limit:
        raise _too_big(what, path, None, limit)
    if isinstance(data, bytes):
        for bom, encoding in _BOMS:
            if data.startswith(bom):
                shown = "FILE" if path == "-" else path
                raise MeshlabError(
                    f"{what} {name} is {encoding} text (it starts with a byte-order mark), "
                    f"not UTF-8; convert it, e.g. iconv -f {encoding} -t UTF-8 {shown} > "
                    f"{shown}.utf8 (PowerShell: Out-File -Encoding utf8)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line, column = _position(data, error.start)
            raise MeshlabError(
                f"{what} {name}, line {line}, column {column}: byte 0x{data[error.start]:02x} "
                f"is not UTF-8 text (binary data?); give {hint}") from None
    else:
        text = data
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is harmless
    bad = _CONTROL.search(text)
    if bad is not None:
        char = bad.group()
        line, column = _position(text, bad.start())
        raise MeshlabError(
            f"{what} {name}, line {line}, column {column}: control character "
            f"U+{ord(char):04X} (binary data, or a file cut and pasted with terminal "
            f"codes?); give {hint}")
    if not text.strip():
        raise MeshlabError(f"{what} {name} is empty; give {hint}")
    if max_line is not None and len(text) > max_line:
        for number, line in enumerate(text.split("\n"), 1):
            if len(line) > max_line:
                raise MeshlabError(
                    f"{what} {name}, line {number}: the line is {len(line):,} characters "
                    f"long (starting {line[:40]!r}); lines here are at most {max_line:,}. "
                    f"Give {hint}")
    return text


__all__ = ["read_text"]
