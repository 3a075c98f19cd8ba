"""The language meshlab speaks to a learner: English by default, Korean on request.

A lesson chooses its language with one call at the top::

    >>> import meshlab
    >>> meshlab.set_language("ko")
    >>> tr("Hint")
    '힌트'
    >>> meshlab.set_language("en")

From then on every message the library shows a learner (an exercise's verdict and hints, a
widget's labels, the step player's steps) comes from the catalog of that language. The
English text *is* the key: code says ``tr("Hint {n}", n=2)``, the Korean catalog maps
``"Hint {n}"`` to ``"힌트 {n}"``, and ``{n}`` is filled in after the lookup, so a
translation can put a value where Korean grammar wants it. A constant kept for later (a hint
ladder, a step's title) is marked with :func:`translatable` where it is written and passed
through :func:`tr` where it is shown.

The catalogs are YAML files under ``meshlab/data/messages/<language>/``, one per module that
speaks, each a list of ``{en: ..., ko: ...}`` pairs. A test checks that every marked English
text has a translation with the same placeholders, code spans and numbers. What the model
itself prints (rule text, trace lines, the command line's errors) stays English: it is
what ``iptables`` and Istio print too.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from meshlab.datafiles import data_file
from meshlab.errors import MeshlabError

#: The languages meshlab speaks; English is the default and needs no catalog.
LANGUAGES = ("en", "ko")

_current = "en"


def set_language(code: str) -> None:
    """Speak ``code`` ("en" or "ko") to the learner from now on (in this Python process)."""
    global _current
    if code not in LANGUAGES:
        raise MeshlabError(f"language {code!r} is not one meshlab speaks; choose one of "
                           + ", ".join(repr(c) for c in LANGUAGES))
    _current = code


def language() -> str:
    """The language the library speaks now ("en" unless :func:`set_language` changed it)."""
    return _current


def translatable(text: str) -> str:
    """Mark ``text`` as a message to translate where it is shown; returns it unchanged."""
    return text


def tr(text: str, /, **values: Any) -> str:
    """``text`` in the current language, with ``values`` filled into its ``{name}`` fields.

    A text the catalog does not have stays English (a test keeps the catalog complete).
    Without ``values`` the text is returned as it is, braces and all.
    """
    if _current != "en":
        text = catalog(_current).get(text, text)
    return text.format(**values) if values else text


@cache
def catalog(code: str) -> dict[str, str]:
    """English text -> its translation, read from every file of ``messages/<code>/``."""
    folder = data_file(f"messages/{code}")
    pairs: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        for number, item in enumerate(yaml.safe_load(entry.read_text(encoding="utf-8")) or [],
                                      start=1):
            if not (isinstance(item, dict) and isinstance(item.get("en"), str)
                    and isinstance(item.get(code), str)):
                raise MeshlabError(f"messages/{code}/{entry.name}: entry {number} needs the "
                                   f"two strings 'en' and {code!r}")
            known = pairs.setdefault(item["en"], item[code])
            if known != item[code]:
                raise MeshlabError(f"messages/{code}/{entry.name}: entry {number} translates "
                                   f"{item['en']!r} differently from another entry; keep one")
    return pairs


__all__ = ["LANGUAGES", "catalog", "language", "set_language", "tr", "translatable"]
