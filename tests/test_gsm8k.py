"""Loading the real GSM8K files, their error messages and the task registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from orderpolicy.tasks import TASKS, load_problems
from orderpolicy.tasks.gsm8k import load_gsm8k, read_jsonl
from orderpolicy.tasks.scoring import consistency, extract_flexible, extract_strict, normalize_number


def _final_value(answer: str) -> str:
    """Return the text after '####' on the answer's last line, read independently of scoring."""
    last_line = answer.splitlines()[-1]
    assert last_line.startswith("####"), last_line
    return last_line[len("####"):].strip()


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"question": "How many?", "answer": "So 2+3=<<2+3=5>>5.\n#### 5"})


def test_test_split_loads_all_records(gsm8k_dir):
    problems = read_jsonl(gsm8k_dir / "test.jsonl")
    assert len(problems) == 1319
    raw = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p.question for p in problems] == [r["question"] for r in raw]
    assert [p.answer for p in problems] == [r["answer"] for r in raw]


def test_train_split_loads_all_records(gsm8k_dir):
    problems = load_gsm8k(path=gsm8k_dir / "train.jsonl")
    assert len(problems) == 7473


def test_targets_are_final_values(gsm8k_dir):
    for problem in read_jsonl(gsm8k_dir / "test.jsonl"):
        final = _final_value(problem.answer)
        assert problem.target == final.replace(",", ""), problem.answer


def test_extraction_matches_reference_answers(gsm8k_dir):
    problems = read_jsonl(gsm8k_dir / "test.jsonl")
    for problem in problems:
        expected = _final_value(problem.answer).replace(",", "")
        assert extract_strict(problem.answer) == expected, problem.answer
        assert extract_flexible(problem.answer) == expected, problem.answer


def test_answers_with_commas_and_signs(gsm8k_dir):
    targets = [p.target for p in read_jsonl(gsm8k_dir / "test.jsonl")]
    assert "-10" in targets
    assert "-3" in targets
    finals = [_final_value(p.answer) for p in read_jsonl(gsm8k_dir / "test.jsonl")]
    with_commas = [value for value in finals if "," in value]
    assert with_commas
    assert all(normalize_number(value) == value.replace(",", "") for value in with_commas)


def test_reference_answers_mostly_consistent(gsm8k_dir):
    problems = read_jsonl(gsm8k_dir / "test.jsonl")
    scores = [consistency(p.answer) for p in problems]
    annotated = [s for s in scores if s.annotations]
    correct = sum(s.correct_annotations for s in annotated)
    total = sum(s.annotations for s in annotated)
    # Human-written references: nearly every calculator annotation is right.
    assert correct / total > 0.99
    assert len(annotated) > 0.95 * len(problems)


def test_limit_keeps_first_records(gsm8k_dir):
    full = read_jsonl(gsm8k_dir / "test.jsonl")
    first = load_gsm8k(path=gsm8k_dir / "test.jsonl", limit=7)
    assert first == full[:7]
    assert load_gsm8k(path=gsm8k_dir / "test.jsonl", limit=0) == []


def test_registry_loads_gsm8k_file(gsm8k_dir):
    problems = load_problems("gsm8k", data=gsm8k_dir / "test.jsonl", num_problems=5)
    assert len(problems) == 5
    assert problems == read_jsonl(gsm8k_dir / "test.jsonl")[:5]


def test_missing_path_names_path_and_fix(tmp_path):
    missing = tmp_path / "nope" / "test.jsonl"
    with pytest.raises(FileNotFoundError) as error:
        load_gsm8k(path=missing)
    message = str(error.value)
    assert str(missing) in message
    assert "--data PATH" in message
    assert "datasets" in message


def test_empty_file_rejected(tmp_path):
    path = _write(tmp_path, ["", "   "])
    with pytest.raises(ValueError, match="contains no records"):
        read_jsonl(path)


def test_bad_json_reports_line_number(tmp_path):
    path = _write(tmp_path, [GOOD, GOOD, '{"question": "x", "answer": '])
    with pytest.raises(ValueError, match=r"invalid JSON in .*data\.jsonl, line 3"):
        read_jsonl(path)


def test_missing_marker_reports_line_number(tmp_path):
    bad = json.dumps({"question": "How many?", "answer": "It is 5."})
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(ValueError, match=r"line 2 is missing the final '#### N'"):
        read_jsonl(path)


def test_marker_without_number_rejected(tmp_path):
    bad = json.dumps({"question": "How many?", "answer": "It is 5.\n#### five"})
    path = _write(tmp_path, [bad])
    with pytest.raises(ValueError, match=r"line 1 has no number after '####'"):
        read_jsonl(path)


def test_missing_key_reports_line_number(tmp_path):
    bad = json.dumps({"question": "How many?"})
    path = _write(tmp_path, [GOOD, GOOD, GOOD, bad])
    with pytest.raises(ValueError, match=r"line 4 is missing key\(s\) \['answer'\]"):
        read_jsonl(path)


def test_non_object_and_non_string_rejected(tmp_path):
    with pytest.raises(ValueError, match="line 1 must be a JSON object"):
        read_jsonl(_write(tmp_path, ["[1, 2]"]))
    bad = json.dumps({"question": 3, "answer": "#### 3"})
    with pytest.raises(ValueError, match="line 1: 'question' must be a string"):
        read_jsonl(_write(tmp_path, [bad]))


def test_blank_lines_skipped_but_counted(tmp_path):
    bad = json.dumps({"question": "How many?", "answer": "It is 5."})
    path = _write(tmp_path, [GOOD, "", bad])
    with pytest.raises(ValueError, match="line 3"):
        read_jsonl(path)
    assert len(read_jsonl(_write(tmp_path, [GOOD, "", GOOD]))) == 2


def test_negative_limit_rejected(tmp_path):
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_gsm8k(path=_write(tmp_path, [GOOD]), limit=-1)


def test_offline_download_error_says_pass_path(tmp_path):
    # Offline mode keeps datasets from reaching the network, as on a machine without it.
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    script = textwrap.dedent(
        """
        from orderpolicy.tasks.gsm8k import load_gsm8k
        try:
            load_gsm8k("test")
        except RuntimeError as error:
            print(error)
        else:
            print("loaded without error")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert "openai/gsm8k" in result.stdout
    assert "pass --data PATH" in result.stdout


def test_registry_lists_tasks():
    assert TASKS == ("gsm-synth", "gsm8k")


def test_registry_unknown_task_suggests_closest():
    with pytest.raises(ValueError, match=r"unknown task 'gsm_synth'.*Did you mean 'gsm-synth'\?"):
        load_problems("gsm_synth")
    with pytest.raises(ValueError, match=r"valid tasks are \['gsm-synth', 'gsm8k'\]"):
        load_problems("xyzzy")


def test_registry_gsm_synth_defaults():
    problems = load_problems("gsm-synth")
    assert len(problems) == 500
    assert load_problems("gsm-synth", num_problems=3, seed=4) == load_problems("gsm-synth", num_problems=3, seed=4)


def test_registry_gsm_synth_rejects_data(tmp_path):
    with pytest.raises(ValueError, match="reads no data file"):
        load_problems("gsm-synth", data=tmp_path / "x.jsonl")


def test_registry_gsm8k_rejects_unknown_split():
    with pytest.raises(ValueError, match="'validation'"):
        load_problems("gsm8k", split="validation")
