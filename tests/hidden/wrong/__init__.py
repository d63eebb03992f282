"""Plausible wrong answers, per assignment: what the hidden checks must catch.

Each module ``<topic>.py`` (the topic named as in ``tests/hidden``) lists its wrong answers in
``WRONG``. A wrong answer is a function registered with `wrong`: its docstring names the mistake and
it returns the learner names it replaces, e.g. ``{"seq2img": ..., "img2seq": ...}`` for a learner
who laid the tokens column-major in both directions. ``subtle=True`` marks a mistake that passes
every visible check, so only the hidden checks can catch it; ``tests/test_classroom.py`` proves
both claims for every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Wrong:
    """A wrong answer: its name, the mistake in words, the replaced learner names, and whether it is subtle."""

    name: str
    mistake: str
    replaces: dict[str, Any]
    subtle: bool


def registry(answers: list[Wrong]) -> Callable[..., Callable]:
    """A decorator ``@wrong(subtle=...)`` that appends the decorated factory's answer to ``answers``."""

    def wrong(subtle: bool) -> Callable[[Callable[[], dict[str, Any]]], Callable]:
        def register(factory: Callable[[], dict[str, Any]]) -> Callable:
            answers.append(Wrong(factory.__name__, " ".join(factory.__doc__.split()), factory(), subtle))
            return factory

        return register

    return wrong
