"""Answer extraction, normalisation, stop strings and the consistency score."""

from __future__ import annotations

from fractions import Fraction

import pytest

from orderpolicy.tasks.scoring import (
    apply_stop_strings,
    consistency,
    evaluate_expression,
    extract_flexible,
    extract_strict,
    is_correct,
    normalize_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,234.", "1234"),
        ("1234", "1234"),
        ("5.0", "5"),
        ("5.", "5"),
        ("-0.50", "-0.5"),
        ("-0", "0"),
        (".5", "0.5"),
        (" 1,450,000 ", "1450000"),
        ("-10", "-10"),
        ("0.0001", "0.0001"),
        ("12345678901234567890123456789.5", "12345678901234567890123456789.5"),
    ],
)
def test_normalize_number_cases(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1e5", "inf", "nan", "1.2.3", "--3", "$", "3/4"])
def test_normalize_number_rejects_non_numbers(text):
    with pytest.raises(ValueError, match="is not a number"):
        normalize_number(text)


def test_numerically_equal_answers_compare_equal():
    assert normalize_number("$1,234.00") == normalize_number("1234")
    assert normalize_number("7.50") == normalize_number("7.5")
    assert normalize_number("7.5") != normalize_number("7.05")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So 5+3=<<5+3=8>>8.\n#### 8", "8"),
        ("#### 1,080", "1080"),
        ("####-3", "-3"),
        ("#### $18.", "18"),
        ("#### 2.50 dollars", "2.5"),
        ("#### 4\n#### 5", "4"),
        ("the answer is 8", None),
        ("#### none", None),
        ("", None),
    ],
)
def test_extract_strict_cases(text, expected):
    assert extract_strict(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 apples, then 5. So the answer is 12.", "12"),
        ("It costs $1,234.", "1234"),
        ("16-3", "3"),
        ("f(3)-2", "2"),
        ("the result is -7 degrees", "-7"),
        ("numbers 3,4", "4"),
        ("a 1.5 b", "1.5"),
        ("#### 9 and then 10", "10"),
        ("no digits here", None),
    ],
)
def test_extract_flexible_cases(text, expected):
    assert extract_flexible(text) == expected


def test_is_correct_strict_and_flexible():
    response = "Then 4*2=<<4*2=8>>8 coins.\n#### 8"
    assert is_correct(response, "8")
    assert is_correct(response, "8", mode="flexible")
    assert not is_correct(response, "9")
    assert is_correct("#### 1,080", "1080")
    assert is_correct("#### 5.0", "5")


def test_is_correct_modes_differ_without_marker():
    response = "So the answer is 8."
    assert not is_correct(response, "8", mode="strict")
    assert is_correct(response, "8", mode="flexible")


def test_is_correct_unknown_mode_names_it():
    with pytest.raises(ValueError, match="'lenient'"):
        is_correct("#### 1", "1", mode="lenient")


def test_is_correct_rejects_invalid_target():
    with pytest.raises(ValueError, match="'eight'"):
        is_correct("#### 8", "eight")


def test_apply_stop_strings_cuts_at_earliest():
    text = "#### 8\n\nQuestion: next one"
    assert apply_stop_strings(text, ["Question:", "\n\n"]) == "#### 8"
    assert apply_stop_strings(text, ["Question:"]) == "#### 8\n\n"
    assert apply_stop_strings(text, ["never"]) == text
    assert apply_stop_strings(text, []) == text
    assert apply_stop_strings("", ["x"]) == ""


def test_apply_stop_strings_rejects_bad_stops():
    with pytest.raises(ValueError, match="non-empty"):
        apply_stop_strings("abc", ["b", ""])
    with pytest.raises(TypeError, match="single string"):
        apply_stop_strings("abc", "b")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("16-3-4", Fraction(9)),
        ("2*3+4", Fraction(10)),
        ("2+3*4", Fraction(14)),
        ("(2+3)*4", Fraction(20)),
        ("100/8/5", Fraction(5, 2)),
        ("-3+10", Fraction(7)),
        ("2*-3", Fraction(-6)),
        ("3*.5", Fraction(3, 2)),
        ("1,000*2", Fraction(2000)),
        (" 7 - 2 ", Fraction(5)),
        ("0.1+0.2", Fraction(3, 10)),
    ],
)
def test_evaluate_expression_values(expression, expected):
    assert evaluate_expression(expression) == expected


@pytest.mark.parametrize(
    "expression",
    ["", "1/0", "2+", "(2+3", "2+3)", "2 3", "2**3", "__import__('os')", "2^3", "(" * 60 + "1" + ")" * 60],
)
def test_evaluate_expression_rejects_invalid(expression):
    assert evaluate_expression(expression) is None


def test_consistency_of_correct_answer():
    answer = (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"
    )
    score = consistency(answer)
    assert score.annotations == 2
    assert score.correct_annotations == 2
    assert score.annotation_share == 1.0
    assert score.final_matches_last
    assert score.score == 1.0


def test_consistency_counts_wrong_annotation():
    score = consistency("So 2+2=<<2+2=5>>5.\nThen 5*4=<<5*4=20>>20.\n#### 20")
    assert score.annotations == 2
    assert score.correct_annotations == 1
    assert score.annotation_share == 0.5
    assert score.final_matches_last
    assert score.score == 0.75


def test_consistency_final_differs_from_last():
    score = consistency("So 2+3=<<2+3=5>>5.\n#### 6")
    assert score.annotation_share == 1.0
    assert not score.final_matches_last
    assert score.score == 0.5


def test_consistency_without_annotations_is_zero():
    score = consistency("The answer is 5.\n#### 5")
    assert score.annotations == 0
    assert score.annotation_share == 0.0
    assert not score.final_matches_last
    assert score.score == 0.0


def test_consistency_without_final_answer():
    score = consistency("So 2+3=<<2+3=5>>5.")
    assert score.annotation_share == 1.0
    assert not score.final_matches_last


def test_consistency_rounded_results():
    assert consistency("<<10/3=3.33>>").correct_annotations == 1
    assert consistency("<<10/3=3.34>>").correct_annotations == 0
    assert consistency("<<10/3=3>>").correct_annotations == 0
    assert consistency("<<2/4=0.5>>").correct_annotations == 1


def test_consistency_unparseable_annotations_are_wrong():
    score = consistency("<<2+=4>> <<1/0=1>> <<5>> <<3*2=six>> <<2*3=6>>")
    assert score.annotations == 5
    assert score.correct_annotations == 1


def test_consistency_chained_equalities():
    assert consistency("<<2*3=3+3=6>>").correct_annotations == 1
    assert consistency("<<2*3=3+4=6>>").correct_annotations == 0
