"""Answer extraction and checks for GSM8K-format responses.

Two extraction rules are modelled on the ``strict-match`` and
``flexible-extract`` filters of lm-evaluation-harness's ``gsm8k`` task
(``lm_eval/tasks/gsm8k/gsm8k.yaml``, version 3.0):

- strict: the number right after the first ``####`` marker;
- flexible: the last number anywhere in the text.

The number pattern is stricter than the harness's character classes, because
commas count only as thousands separators (``3,4`` is two numbers). It is also
more lenient after the marker, which may be followed by any whitespace and ``$``.

Both return the number normalised by :func:`normalize_number`, so answers that
are numerically equal compare equal as strings: ``"$1,234."``, ``"1234"`` and
``"1234.0"`` all become ``"1234"``. This is looser than lm-evaluation-harness,
whose exact match removes commas, ``$`` and a trailing period but would count
``"5.0"`` and ``"5"`` as different answers.

A number is an optional sign, an optional ``$``, digits with optional thousands
commas (``1,234,567``) and an optional decimal part. A minus sign counts as a
sign only when no letter, digit or ``)`` comes right before it, so the last
number of ``16-3`` is ``3``, not ``-3``.

:func:`consistency` scores a response against itself: does every calculator
annotation ``<<expression=result>>`` compute, and does the ``####`` answer
repeat the last annotated result? Expressions are parsed by a small
recursive-descent parser over ``+ - * / ( )`` and exact fractions; nothing is
passed to ``eval``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

SCORING_MODES = ("strict", "flexible")

_NUMBER = r"(?:(?<![\w)])-)?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_STRICT_RE = re.compile(r"####\s*(" + _NUMBER + ")")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
_EXPRESSION_TOKEN_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+|[-+*/()])")
_MAX_NESTING = 50  # deepest parentheses or sign nesting an annotation may use


def normalize_number(text: str) -> str:
    """Return the canonical string of a number, or raise ``ValueError``.

    Removes surrounding whitespace, ``$``, thousands commas and one trailing
    period, then writes the value without trailing zeros: ``"$1,234."`` ->
    ``"1234"``, ``"5.0"`` -> ``"5"``, ``"-0.50"`` -> ``"-0.5"``, ``"-0"`` -> ``"0"``.
    Exponents, ``inf`` and ``nan`` are rejected.
    """
    cleaned = text.strip().replace("$", "").replace(",", "")
    if cleaned.endswith("."):
        cleaned = cleaned[:-1]
    if not _PLAIN_NUMBER_RE.fullmatch(cleaned):
        raise ValueError(f"{text!r} is not a number; expected digits with optional sign, $, commas and decimals")
    value = Decimal(cleaned)
    if value == value.to_integral_value():
        return str(int(value))
    # Strip zeros from the exact digits; Decimal.normalize would round to 28 digits.
    return format(value, "f").rstrip("0")


def extract_strict(text: str) -> str | None:
    """Return the normalised number after the first ``####``, or None when there is none."""
    match = _STRICT_RE.search(text)
    if match is None:
        return None
    return normalize_number(match.group(1))


def extract_flexible(text: str) -> str | None:
    """Return the normalised last number in ``text``, or None when it contains no number."""
    numbers = _NUMBER_RE.findall(text)
    if not numbers:
        return None
    return normalize_number(numbers[-1])


def is_correct(text: str, target: str, mode: str = "strict") -> bool:
    """Check whether the answer extracted from ``text`` equals ``target`` numerically.

    ``mode`` picks the extraction rule, "strict" or "flexible". A response with
    no extractable answer is wrong. ``target`` must be a number, or this raises
    ``ValueError``.
    """
    if mode == "strict":
        answer = extract_strict(text)
    elif mode == "flexible":
        answer = extract_flexible(text)
    else:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {SCORING_MODES}")
    return answer is not None and answer == normalize_number(target)


def apply_stop_strings(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` just before the earliest occurrence of any stop string."""
    if isinstance(stops, str):
        raise TypeError(f"stops must be a sequence of strings, got the single string {stops!r}; wrap it in a list")
    end = len(text)
    for stop in stops:
        if not stop:
            raise ValueError(f"stop strings must be non-empty, got {list(stops)!r}")
        index = text.find(stop)
        if index != -1:
            end = min(end, index)
    return text[:end]


@dataclass(frozen=True)
class ConsistencyScore:
    """Internal consistency of one GSM8K-format response.

    >>> consistency("So 2+3=<<2+3=5>>5.\\n#### 5").score
    1.0
    """

    annotations: int  # number of <<expression=result>> annotations found
    correct_annotations: int  # annotations whose expression evaluates to their result
    annotation_share: float  # correct_annotations / annotations; 0.0 when there are none
    final_matches_last: bool  # the #### answer equals the last annotation's result
    score: float  # mean of annotation_share and final_matches_last, in [0, 1]


def consistency(text: str) -> ConsistencyScore:
    """Score how well a response's arithmetic agrees with itself.

    A response without annotations gets ``annotation_share = 0.0``: it shows no
    checked work, and a nan would poison averages over a batch. An annotation
    that does not parse (unknown symbol, division by zero, missing ``=``)
    counts as incorrect. ``final_matches_last`` is False when the response has
    no ``####`` answer or no annotation with a readable result.
    """
    bodies = _ANNOTATION_RE.findall(text)
    correct = sum(_annotation_is_correct(body) for body in bodies)
    share = correct / len(bodies) if bodies else 0.0

    final = extract_strict(text)
    last_result = _annotation_result(bodies[-1]) if bodies else None
    matches = final is not None and last_result is not None and final == last_result
    return ConsistencyScore(
        annotations=len(bodies),
        correct_annotations=correct,
        annotation_share=share,
        final_matches_last=matches,
        score=(share + float(matches)) / 2,
    )


def _annotation_result(body: str) -> str | None:
    """Return the normalised result after the last ``=``, or None when unreadable."""
    if "=" not in body:
        return None
    try:
        return normalize_number(body.rsplit("=", 1)[1])
    except ValueError:
        return None


def _annotation_is_correct(body: str) -> bool:
    """Check ``a op b = r`` (or ``x = y = r``): every side must evaluate to the written result.

    A result written with d decimals counts as correct when the exact value
    rounds to it, since GSM8K writes ``<<10/3=3.33>>``. An integer result must
    be exact.
    """
    expressions = body.split("=")[:-1]
    result = _annotation_result(body)
    if not expressions or result is None:
        return False
    decimals = len(result.split(".")[1]) if "." in result else 0
    tolerance = Fraction(1, 2 * 10**decimals) if decimals else Fraction(0)
    for expression in expressions:
        value = evaluate_expression(expression)
        if value is None or abs(value - Fraction(result)) > tolerance:
            return False
    return True


def evaluate_expression(expression: str) -> Fraction | None:
    """Evaluate ``+ - * / ( )`` arithmetic on decimal numbers exactly.

    Thousands commas and ``$`` are ignored. Returns None when the expression
    does not parse, divides by zero or nests deeper than 50 levels.
    """
    tokens = _tokenize(expression.replace(",", "").replace("$", ""))
    if not tokens:
        return None
    parser = _ExpressionParser(tokens)
    try:
        value = parser.parse_sum(depth=0)
    except (ValueError, ZeroDivisionError):
        return None
    if parser.position != len(tokens):
        return None
    return value


def _tokenize(expression: str) -> list[str] | None:
    tokens, position = [], 0
    stripped_end = len(expression.rstrip())
    while position < stripped_end:
        match = _EXPRESSION_TOKEN_RE.match(expression, position)
        if match is None:
            return None
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _ExpressionParser:
    """Recursive descent: sum := product (+|- product)*, product := unary (*|/ unary)*."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.position = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise ValueError("expression ends early")
        self.position += 1
        return token

    def parse_sum(self, depth: int) -> Fraction:
        value = self.parse_product(depth)
        while self._peek() in ("+", "-"):
            operator = self._take()
            right = self.parse_product(depth)
            value = value + right if operator == "+" else value - right
        return value

    def parse_product(self, depth: int) -> Fraction:
        value = self.parse_unary(depth)
        while self._peek() in ("*", "/"):
            operator = self._take()
            right = self.parse_unary(depth)
            value = value * right if operator == "*" else value / right
        return value

    def parse_unary(self, depth: int) -> Fraction:
        if depth > _MAX_NESTING:
            raise ValueError("expression nests too deeply")
        token = self._take()
        if token in ("+", "-"):
            value = self.parse_unary(depth + 1)
            return -value if token == "-" else value
        if token == "(":
            value = self.parse_sum(depth + 1)
            if self._take() != ")":
                raise ValueError("unbalanced parentheses")
            return value
        if token in (")", "*", "/"):
            raise ValueError(f"unexpected {token!r}")
        return Fraction(token)
