"""The one base class for every error meshlab raises on bad input.

Each error says what is wrong, where (a line and column when there is text), and how to fix
it, so that the command line and the widgets can show it to a person as it is.
"""

from __future__ import annotations


class MeshlabError(Exception):
    """Bad input or an impossible request; the message is written for a person."""
