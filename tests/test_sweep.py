"""scripts/evaluate.py end to end, the sweep library, the Pareto front and the equal-NFE comparison."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import orderpolicy
from orderpolicy.evaluation import read_train_config, synth_config_from
from orderpolicy.evaluation.pareto import interpolate_along, match_mean_steps, pareto_front
from orderpolicy.evaluation.sweep import (
    DEFAULT_THRESHOLDS,
    build_comparisons,
    heuristic_entries,
    parse_steps,
    parse_threshold_grid,
    policy_entries,
    run_sweep,
)
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.posterior import save_policy
from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet
from orderpolicy.tasks import load_problems

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "evaluate.py"
NUMERIC_COLUMNS = {  # Markdown header -> (row key, decimals shown)
    "accuracy": ("accuracy", 4),
    "consistency": ("consistency", 4),
    "mean steps": ("mean_steps", 3),
    "mean NFE": ("mean_nfe", 3),
    "tokens/s": ("tokens_per_second", 1),
}


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(None)


@pytest.fixture(scope="module")
def train_config():
    return read_train_config(None)


@pytest.fixture(scope="module")
def policy_file(adapter, tmp_path_factory) -> Path:
    """A policy file written from a freshly initialised posterior for the shipped MDM."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("policy") / "fresh.pt"
    save_policy(path, PosteriorNet(PosteriorConfig(), adapter.hidden_size), adapter)
    return path


@pytest.fixture(scope="module")
def sweep_dir(policy_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--num-problems", "4", "--batch-size", "4", "--strategies",
         "confidence,threshold", "--steps", "2,4", "--thresholds", "threshold=0.5,0.9", "--policies",
         str(policy_file), "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


def markdown_rows(text: str) -> list[dict]:
    """Parse the first Markdown table of ``text`` into dictionaries keyed by header."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| strategy |"))
    headers = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(headers, [cell.strip() for cell in line.strip("|").split("|")])))
    return rows


# The script -------------------------------------------------------------------------------


def test_sweep_writes_all_files(sweep_dir):
    for name in ("results.json", "results.csv", "results.md", "accuracy_vs_nfe.png"):
        assert (sweep_dir / name).is_file(), name
    assert (sweep_dir / "accuracy_vs_nfe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_rows_cover_grid(sweep_dir):
    rows = json.loads((sweep_dir / "results.json").read_text())["rows"]
    settings = {(row["strategy"], row["setting"], row["kind"]) for row in rows}
    assert settings == {
        ("confidence", 2, "fixed"), ("confidence", 4, "fixed"),
        ("threshold", 0.5, "adaptive"), ("threshold", 0.9, "adaptive"),
        ("fresh-greedy", "greedy", "learned"), ("fresh-sample", "sample", "learned"),
    }
    assert len(rows) == len(settings)


def test_sweep_steps_equal_nfe(sweep_dir):
    rows = json.loads((sweep_dir / "results.json").read_text())["rows"]
    for row in rows:
        assert row["mean_nfe"] == row["mean_steps"], row
        assert row["problems"] == 4
        assert 0 <= row["accuracy"] <= 1
        assert row["tokens_per_second"] > 0
    for row in rows:
        if row["kind"] == "fixed":
            assert row["mean_steps"] == row["setting"], row
            assert row["max_steps"] == row["setting"], row


def test_sweep_pareto_flags(sweep_dir):
    rows = json.loads((sweep_dir / "results.json").read_text())["rows"]
    for row in rows:
        dominated = any(
            other["mean_nfe"] <= row["mean_nfe"] and other["accuracy"] >= row["accuracy"]
            and (other["mean_nfe"] < row["mean_nfe"] or other["accuracy"] > row["accuracy"])
            for other in rows
        )
        assert row["pareto"] is (not dominated), row


def test_sweep_csv_matches_json(sweep_dir):
    rows = json.loads((sweep_dir / "results.json").read_text())["rows"]
    with (sweep_dir / "results.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == len(rows)
    for row, csv_row in zip(rows, csv_rows):
        assert csv_row["strategy"] == row["strategy"]
        assert csv_row["setting"] == str(row["setting"])
        assert csv_row["pareto"] == str(row["pareto"])
        for key in ("accuracy", "consistency", "mean_steps", "mean_nfe", "tokens_per_second"):
            assert float(csv_row[key]) == row[key], key
        assert int(csv_row["max_steps"]) == row["max_steps"]


def test_sweep_table_matches_json(sweep_dir):
    rows = json.loads((sweep_dir / "results.json").read_text())["rows"]
    table = markdown_rows((sweep_dir / "results.md").read_text())
    assert len(table) == len(rows)
    for row, cells in zip(rows, table):
        assert cells["strategy"] == row["strategy"]
        assert cells["setting"] == str(row["setting"])
        assert cells["Pareto"] == str(row["pareto"])
        assert int(cells["max steps"]) == row["max_steps"]
        for header, (key, decimals) in NUMERIC_COLUMNS.items():
            assert abs(float(cells[header]) - row[key]) <= 0.5 * 10 ** -decimals + 1e-12, header


def test_sweep_records_provenance(sweep_dir):
    record = json.loads((sweep_dir / "results.json").read_text())
    assert record["model"] == "shipped"
    assert record["task"] == "gsm-synth"
    assert record["seed"] == 0
    assert record["version"] == orderpolicy.__version__
    assert {"platform", "processor", "cpu_count", "torch", "device"} <= set(record["machine"])
    assert record["settings"]["thresholds"] == {"threshold": [0.5, 0.9]}


def test_sweep_compares_at_policy_nfe(sweep_dir):
    record = json.loads((sweep_dir / "results.json").read_text())
    learned = {row["strategy"]: row for row in record["rows"] if row["kind"] == "learned"}
    comparisons = {c["reference"]: c for c in record["comparisons"]}
    assert set(comparisons) == set(learned)
    for name, comparison in comparisons.items():
        assert comparison["target_nfe"] == learned[name]["mean_nfe"]
        assert [m["strategy"] for m in comparison["matches"]] == ["confidence", "threshold"]
    markdown = (sweep_dir / "results.md").read_text()
    assert "Comparison at ~" in markdown
    assert "interpolated accuracy" in markdown.lower()


def test_script_rejects_threshold_for_fixed_rule(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--strategies", "confidence", "--thresholds", "confidence=0.5",
         "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode != 0
    assert "--steps" in done.stderr


# The library --------------------------------------------------------------------------------


def test_sweep_same_seed_same_numbers(adapter, train_config, policy_file):
    problems = load_problems("gsm-synth", num_problems=2, seed=5, synth_config=synth_config_from(train_config))
    lengths = dict(prompt_length=train_config["prompt_length"], response_length=train_config["response_length"])

    def sweep() -> list[dict]:
        entries = heuristic_entries("random", [2], [], response_length=lengths["response_length"])
        entries += [entry for entry in policy_entries([str(policy_file)], adapter, seed=3)
                    if entry.setting == "sample"]
        rows = run_sweep(adapter, problems, entries, batch_size=2, seed=3, progress=False, **lengths)
        return [{key: value for key, value in row.items() if key not in ("seconds", "tokens_per_second")}
                for row in rows]

    assert sweep() == sweep()


def test_parse_steps_rejects_bad_lists():
    assert parse_steps("2,4,8") == [2, 4, 8]
    for text in ("", "2,x", "0,2", "2,2"):
        with pytest.raises(ValueError):
            parse_steps(text)


def test_threshold_grid_defaults_and_overrides():
    grid = parse_threshold_grid(["eb=0.1,1"], ["confidence", "threshold", "eb"])
    assert grid == {"threshold": list(DEFAULT_THRESHOLDS["threshold"]), "eb": [0.1, 1.0]}


@pytest.mark.parametrize("items, match", [
    (["margin=0.5"], "step budgets"),
    (["factor=1"], "does not include"),
    (["threshold=1.5"], r"\(0, 1\]"),
    (["threshold"], "NAME="),
    (["threshold=0.5,0.5"], "each once"),
])
def test_threshold_grid_rejects(items, match):
    with pytest.raises(ValueError, match=match):
        parse_threshold_grid(items, ["margin", "threshold"])


# Pareto front and equal-cost comparison ------------------------------------------------------


def test_pareto_front_hand_made():
    points = [(1, 0.2), (2, 0.5), (2, 0.5), (3, 0.5), (3, 0.9), (0.5, 0.1), (4, 0.9), (1, 0.1)]
    # (3, 0.5) loses to (2, 0.5), (4, 0.9) to (3, 0.9), (1, 0.1) to (1, 0.2); the duplicates tie.
    assert pareto_front(points) == [True, True, True, False, True, True, False, False]


def test_pareto_front_edge_cases():
    assert pareto_front([]) == []
    assert pareto_front([(5, 0.0)]) == [True]
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [True, True]
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(1, math.nan)])


def rows_of(strategy: str, points: list[tuple[float, float]], kind: str = "adaptive") -> list[dict]:
    return [{"strategy": strategy, "setting": i, "kind": kind, "mean_nfe": nfe, "mean_steps": nfe, "accuracy": acc}
            for i, (nfe, acc) in enumerate(points)]


def test_match_mean_steps_nearest_and_ties():
    rows = rows_of("threshold", [(2.0, 0.1), (3.5, 0.2), (4.5, 0.3)]) + rows_of("eb", [(3.0, 0.4), (5.0, 0.5)])
    matched = match_mean_steps(rows, 4.0)
    assert matched["threshold"]["mean_steps"] == 3.5  # 3.5 and 4.5 tie; the cheaper wins
    assert matched["eb"]["mean_steps"] == 3.0  # 3.0 and 5.0 tie
    assert list(match_mean_steps(rows, 4.9, strategies=["eb"])) == ["eb"]
    with pytest.raises(ValueError, match="no rows"):
        match_mean_steps(rows, 4.0, strategies=["factor"])


def test_interpolate_along_curve():
    curve = rows_of("confidence", [(4, 0.6), (2, 0.2), (8, 0.8), (8, 0.6)])
    assert interpolate_along(curve, 3) == pytest.approx(0.4)
    assert interpolate_along(curve, 6) == pytest.approx(0.65)  # the two rows at 8 average to 0.7
    assert interpolate_along(curve, 2) == pytest.approx(0.2)
    assert interpolate_along(curve, 1.5) is None
    assert interpolate_along(curve, 9) is None
    assert interpolate_along(rows_of("x", [(4, 0.3)]), 4) == pytest.approx(0.3)


def test_build_comparisons_targets():
    rules = rows_of("confidence", [(2, 0.2), (4, 0.6)], kind="fixed")
    learned = rows_of("policy-greedy", [(3, 0.5)], kind="learned")
    (comparison,) = build_comparisons(rules + learned)
    assert comparison["reference"] == "policy-greedy"
    assert comparison["target_nfe"] == 3
    (match,) = comparison["matches"]
    assert match["setting"] == 0  # NFE 2 and 4 tie at distance 1; the cheaper wins
    assert match["interpolated_accuracy"] == pytest.approx(0.4)
    (default,) = build_comparisons(rules, default_target=4.0)
    assert default["reference"] is None
    assert default["matches"][0]["mean_nfe"] == 4
