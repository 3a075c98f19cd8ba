"""Shared by the solution files: run each checker on its answer and print the verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshlab import exercises


def show(answers: Mapping[str, Any]) -> int:
    """Print every checker's result for ``answers``; the exit status counts the wrong ones."""
    wrong = 0
    for name, answer in answers.items():
        result = getattr(exercises, name)(answer)
        print(result, end="\n\n")
        wrong += not result.correct
    return wrong
