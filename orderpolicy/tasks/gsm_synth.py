"""Procedural grade-school word problems in GSM8K's answer format.

A problem is a chain of 2 to 4 dependent operations on small integers. Each
response line repeats the calculation with a calculator annotation, as GSM8K
does (``Then 5+3=<<5+3=8>>8 apples.``), and the last line is ``#### N``.
Line k starts from the result of line k - 1, so a decoder that unmasks two
dependent results in the same step has to guess the later one.

The value range is kept small on purpose: every intermediate value lies in
``[0, max_value]`` and every operand in ``[min_operand, max_operand]``, so the
arithmetic the model must learn is a few hundred facts. Numbers are single
tokens of the built-in tokenizer, so a number's width never shifts positions.

Problems are deterministic by seed. The train and test splits draw from
disjoint sets of problems: a problem belongs to the test split exactly when a
hash of its arithmetic chain (start value, operations, operands) falls in the
test bucket, so the same chain can never appear in both splits.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

from orderpolicy.tasks.base import Problem

NAMES = (
    "Tom", "Ann", "Lily", "Max", "Sara", "Ben", "Mia", "Leo", "Zoe", "Sam",
    "Emma", "Jack", "Nora", "Omar", "Ivy", "Paul", "Rita", "Ken", "Lucy", "Dan",
)
OBJECTS = (
    "apples", "marbles", "cookies", "stickers", "pencils", "books", "cards",
    "shells", "coins", "eggs", "toys", "flowers", "stamps", "balloons", "candies",
)

# Prompt sentences per operation. {p} is the person, {b} the operand, {o} the object.
START_TEMPLATES = (
    "{p} has {v} {o}.",
    "{p} starts with {v} {o}.",
    "There are {v} {o} in the box of {p}.",
)
OP_TEMPLATES = {
    "+": ("{p} buys {b} more {o}.", "{p} finds {b} more {o}.", "{q} gives {p} {b} {o}."),
    "-": ("{p} gives {b} {o} to {q}.", "{p} loses {b} {o}.", "{p} sells {b} {o}."),
    "*": ("{p} gets {b} times as many {o}.", "The number of {o} grows {b} times."),
    "/": ("{p} splits the {o} into {b} equal groups and keeps one.", "{p} keeps one of {b} equal shares."),
}
QUESTION_TEMPLATES = (
    "How many {o} does {p} have now?",
    "How many {o} are there in the end?",
)
# Response lines: one short opener word, the calculation, the unit.
LINE_OPENERS = ("Then", "Now", "So", "Next")

OPERATIONS = ("+", "-", "*", "/")
# Consecutive failed draws after which generation raises, so that a config that
# allows (almost) no chains fails with an error and does not loop forever.
MAX_ATTEMPTS = 10_000


@dataclass
class GsmSynthConfig:
    """Difficulty knobs of the gsm-synth task."""

    min_ops: int = 2  # fewest operations per problem
    max_ops: int = 4  # most operations per problem
    min_start: int = 2  # smallest start value
    max_start: int = 20  # largest start value
    min_operand: int = 2  # smallest second operand of an operation
    max_operand: int = 9  # largest second operand of an operation
    max_value: int = 40  # largest value any intermediate result may take
    max_multiplicand: int = 9  # largest left operand of a multiplication
    operations: list[str] = field(default_factory=lambda: list(OPERATIONS))  # allowed: + - * /
    test_fraction: float = 0.1  # share of chains reserved for the test split

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(
                f"gsm-synth needs 1 <= min_ops <= max_ops, got min_ops={self.min_ops}, "
                f"max_ops={self.max_ops}; fix task.min_ops / task.max_ops in the config"
            )
        unknown = [op for op in self.operations if op not in OPERATIONS]
        if unknown or not self.operations:
            raise ValueError(
                f"gsm-synth operations must be a non-empty subset of {list(OPERATIONS)}, "
                f"got {self.operations}"
            )
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        if not 0 <= self.min_start <= self.max_start <= self.max_value:
            raise ValueError(
                f"gsm-synth needs 0 <= min_start <= max_start <= max_value, got "
                f"{self.min_start}, {self.max_start}, {self.max_value}"
            )
        if not 1 <= self.min_operand <= self.max_operand:
            raise ValueError(
                f"gsm-synth needs 1 <= min_operand <= max_operand, got min_operand={self.min_operand}, "
                f"max_operand={self.max_operand}; fix task.min_operand / task.max_operand in the config"
            )
        if self.max_multiplicand < 0:
            raise ValueError(f"max_multiplicand must be >= 0, got {self.max_multiplicand}")


def _feasible_operations(config: GsmSynthConfig, value: int) -> list[tuple[str, int]]:
    """List every (operation, operand) whose result stays in [0, max_value]."""
    choices = []
    for b in range(config.min_operand, config.max_operand + 1):
        for op in config.operations:
            if op == "+" and value + b <= config.max_value:
                choices.append((op, b))
            elif op == "-" and value - b >= 0:
                choices.append((op, b))
            elif op == "*" and value <= config.max_multiplicand and value * b <= config.max_value:
                choices.append((op, b))
            elif op == "/" and value % b == 0 and value // b >= 1:
                choices.append((op, b))
    return choices


def apply_operation(a: int, op: str, b: int) -> int:
    """Compute ``a op b`` for the four operations (division is exact)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0 or a % b:
            raise ValueError(f"{a}/{b} is not an exact integer division")
        return a // b
    raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")


def _chain_in_test_split(chain: tuple, test_fraction: float) -> bool:
    digest = hashlib.sha256(repr(chain).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def _sample_chain(config: GsmSynthConfig, rng: random.Random) -> tuple[int, list[tuple[str, int]]]:
    for _ in range(MAX_ATTEMPTS):
        start = rng.randint(config.min_start, config.max_start)
        num_ops = rng.randint(config.min_ops, config.max_ops)
        value, steps = start, []
        for _ in range(num_ops):
            choices = _feasible_operations(config, value)
            if not choices:
                break
            op, b = rng.choice(choices)
            steps.append((op, b))
            value = apply_operation(value, op, b)
        if len(steps) == num_ops:
            return start, steps
    raise ValueError(
        f"gsm-synth found no chain of {config.min_ops}..{config.max_ops} operations in {MAX_ATTEMPTS} "
        f"attempts for {config}; widen max_value, the operand range or operations"
    )


def _render(start: int, steps: list[tuple[str, int]], rng: random.Random) -> Problem:
    person, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    sentences = [rng.choice(START_TEMPLATES).format(p=person, v=start, o=obj)]
    lines = []
    value = start
    for op, b in steps:
        sentences.append(rng.choice(OP_TEMPLATES[op]).format(p=person, q=other, b=b, o=obj))
        result = apply_operation(value, op, b)
        calc = f"{value}{op}{b}"
        lines.append(f"{rng.choice(LINE_OPENERS)} {calc}=<<{calc}={result}>>{result} {obj}.")
        value = result
    sentences.append(rng.choice(QUESTION_TEMPLATES).format(p=person, o=obj))
    lines.append(f"#### {value}")
    return Problem(question=" ".join(sentences), answer="\n".join(lines), target=str(value))


def generate(config: GsmSynthConfig, split: str, num_problems: int, seed: int) -> list[Problem]:
    """Generate ``num_problems`` problems of ``split`` ("train" or "test"), deterministic by seed."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if num_problems < 0:
        raise ValueError(f"num_problems must be >= 0, got {num_problems}")
    want_test = split == "test"
    # Separate streams per split, so a test seed never replays the train stream.
    rng = random.Random(f"gsm-synth/{split}/{seed}")
    problems: list[Problem] = []
    # A split that receives a share s of the chains rejects 50 / s draws in a row
    # with probability (1 - s) ** (50 / s) < e**-50, so only a broken config hits the cap.
    share = config.test_fraction if want_test else 1 - config.test_fraction
    max_rejections = max(MAX_ATTEMPTS, math.ceil(50 / share))
    rejected_in_a_row = 0
    while len(problems) < num_problems:
        start, steps = _sample_chain(config, rng)
        chain = (start, tuple(steps))
        if _chain_in_test_split(chain, config.test_fraction) != want_test:
            rejected_in_a_row += 1
            if rejected_in_a_row >= max_rejections:
                raise ValueError(
                    f"gsm-synth drew {max_rejections} chains in a row outside the {split} split for {config}; "
                    "the config allows too few distinct chains, so widen the value or operand ranges"
                )
            continue
        rejected_in_a_row = 0
        problems.append(_render(start, steps, rng))
    return problems


def vocabulary_words(config: GsmSynthConfig) -> list[str]:
    """Return every word, number and symbol that gsm-synth text can contain."""
    words: set[str] = set(NAMES) | set(OBJECTS) | set(LINE_OPENERS)
    templates = START_TEMPLATES + QUESTION_TEMPLATES + sum(OP_TEMPLATES.values(), ())
    for template in templates:
        text = template.format(p="", q="", v="", b="", o="")
        words.update(w for w in text.replace(".", " ").replace("?", " ").split())
    numbers = [str(n) for n in range(0, max(config.max_value, config.max_operand) + 1)]
    return sorted(words) + numbers
