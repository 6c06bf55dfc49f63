"""The procedural gsm-synth task: determinism, split hygiene, arithmetic and knobs."""

from __future__ import annotations

import re

import pytest

from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate
from orderpolicy.tasks.scoring import consistency, extract_strict

ANNOTATION = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>")


def _steps(answer: str) -> list[tuple[int, str, int, int]]:
    """Return every annotated step (left, operation, operand, result) of an answer."""
    return [(int(a), op, int(b), int(r)) for a, op, b, r in ANNOTATION.findall(answer)]


def _chain(answer: str) -> tuple:
    """Return the arithmetic chain (start value, then each operation and operand)."""
    steps = _steps(answer)
    return (steps[0][0],) + tuple((op, b) for _, op, b, _ in steps)


def test_same_seed_same_problems():
    config = GsmSynthConfig()
    assert generate(config, "train", 200, seed=3) == generate(config, "train", 200, seed=3)
    assert generate(config, "test", 200, seed=3) == generate(config, "test", 200, seed=3)


def test_different_seeds_differ():
    config = GsmSynthConfig()
    first = generate(config, "train", 200, seed=0)
    second = generate(config, "train", 200, seed=1)
    assert first != second
    assert len({p.question for p in first} & {p.question for p in second}) < 20


def test_prefix_stable_across_counts():
    config = GsmSynthConfig()
    assert generate(config, "test", 50, seed=2) == generate(config, "test", 120, seed=2)[:50]


def test_train_and_test_disjoint():
    config = GsmSynthConfig()
    train = generate(config, "train", 4000, seed=0)
    test = generate(config, "test", 2000, seed=0)
    train_chains = {_chain(p.answer) for p in train}
    test_chains = {_chain(p.answer) for p in test}
    assert train_chains.isdisjoint(test_chains)
    assert {p.question for p in train}.isdisjoint({p.question for p in test})


def test_answers_are_consistent():
    problems = generate(GsmSynthConfig(), "train", 1000, seed=5)
    for problem in problems:
        score = consistency(problem.answer)
        assert score.score == 1.0, problem.answer
        assert extract_strict(problem.answer) == problem.target, problem.answer
        assert problem.answer.splitlines()[-1] == f"#### {problem.target}"


def test_steps_chain_into_each_other():
    for problem in generate(GsmSynthConfig(), "test", 300, seed=6):
        steps = _steps(problem.answer)
        for previous, current in zip(steps, steps[1:]):
            assert current[0] == previous[3], problem.answer
        assert str(steps[-1][3]) == problem.target


def test_question_mentions_start_and_operands():
    for problem in generate(GsmSynthConfig(), "train", 300, seed=7):
        numbers = re.findall(r"\d+", problem.question)
        steps = _steps(problem.answer)
        expected = [str(steps[0][0])] + [str(b) for _, _, b, _ in steps]
        assert numbers == expected, problem.question


@pytest.mark.parametrize("max_value", [12, 25, 60])
def test_max_value_respected(max_value):
    config = GsmSynthConfig(max_value=max_value, max_start=min(20, max_value))
    for problem in generate(config, "train", 400, seed=8):
        for left, _, _, result in _steps(problem.answer):
            assert 0 <= left <= max_value, problem.answer
            assert 0 <= result <= max_value, problem.answer


def test_operand_and_start_ranges_respected():
    config = GsmSynthConfig(min_start=5, max_start=9, min_operand=3, max_operand=4, max_value=40)
    for problem in generate(config, "train", 400, seed=9):
        steps = _steps(problem.answer)
        assert 5 <= steps[0][0] <= 9, problem.answer
        for _, _, operand, _ in steps:
            assert 3 <= operand <= 4, problem.answer


def test_operation_count_respected():
    config = GsmSynthConfig(min_ops=3, max_ops=3)
    for problem in generate(config, "train", 300, seed=10):
        assert len(_steps(problem.answer)) == 3, problem.answer
    counts = {len(_steps(p.answer)) for p in generate(GsmSynthConfig(min_ops=1, max_ops=4), "train", 600, seed=10)}
    assert counts == {1, 2, 3, 4}


def test_operations_subset_respected():
    config = GsmSynthConfig(operations=["+", "-"])
    used = {op for p in generate(config, "train", 400, seed=11) for _, op, _, _ in _steps(p.answer)}
    assert used == {"+", "-"}


def test_multiplicand_limit_respected():
    config = GsmSynthConfig(max_multiplicand=4, max_value=40)
    for problem in generate(config, "train", 400, seed=12):
        for left, op, _, _ in _steps(problem.answer):
            if op == "*":
                assert left <= 4, problem.answer


def test_division_is_exact():
    for problem in generate(GsmSynthConfig(operations=["/", "+"]), "train", 400, seed=13):
        for left, op, operand, result in _steps(problem.answer):
            if op == "/":
                assert left == operand * result, problem.answer


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_ops": 3, "max_ops": 2}, "min_ops"),
        ({"min_ops": 0}, "min_ops"),
        ({"operations": ["^"]}, "operations"),
        ({"operations": []}, "operations"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"max_start": 50, "max_value": 40}, "max_start"),
        ({"min_start": 9, "max_start": 3}, "min_start"),
        ({"min_operand": 5, "max_operand": 4}, "min_operand"),
        ({"min_operand": 0}, "min_operand"),
        ({"max_multiplicand": -1}, "max_multiplicand"),
    ],
)
def test_invalid_config_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        GsmSynthConfig(**overrides)


def test_infeasible_config_raises_instead_of_hanging():
    # Every chain must subtract 9 from a start of at most 8, which never stays >= 0.
    config = GsmSynthConfig(min_start=2, max_start=8, min_operand=9, max_operand=9, operations=["-"])
    with pytest.raises(ValueError, match="no chain"):
        generate(config, "train", 1, seed=0)


def test_split_without_chains_raises_instead_of_hanging():
    # The only possible chain (start 2, then +2, then +2) lands in one split, so the other stays empty.
    config = GsmSynthConfig(
        min_ops=2, max_ops=2, min_start=2, max_start=2, min_operand=2, max_operand=2, operations=["+"]
    )
    outcomes = []
    for split in ("train", "test"):
        try:
            outcomes.append(len(generate(config, split, 3, seed=0)))
        except ValueError as error:
            assert "split" in str(error)
            outcomes.append(None)
    assert sorted(outcomes, key=str) == [3, None]


def test_generate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'validation'"):
        generate(GsmSynthConfig(), "validation", 1, seed=0)
    with pytest.raises(ValueError, match="-1"):
        generate(GsmSynthConfig(), "train", -1, seed=0)
    assert generate(GsmSynthConfig(), "train", 0, seed=0) == []
