"""The record every task produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer.

    ``answer`` is the full worked solution in GSM8K format (step lines, then
    ``#### N``); ``target`` is the final number as a normalised string.
    """

    question: str
    answer: str
    target: str
