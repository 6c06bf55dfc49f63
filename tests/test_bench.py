"""scripts/bench.py at minimal sizes, and the benchmark helpers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orderpolicy.evaluation.bench import BenchSettings, check_goal, median_seconds
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.posterior import save_policy
from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "bench.py"
LINE_KEYS = {"name", "times", "ratio", "goal", "met", "extra"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    adapter = load_adapter(None)
    torch.manual_seed(0)
    # A non-zero output bias keeps the fresh posterior from unmasking everything in one step.
    net = PosteriorNet(PosteriorConfig(init_bias=-1.0), adapter.hidden_size)
    policy = tmp_path_factory.mktemp("policy") / "fresh.pt"
    save_policy(policy, net, adapter)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--policy", str(policy), "--batch-sizes", "1,2", "--env-batch", "2",
         "--throughput-batches", "1,2", "--repeats", "1", "--warmup", "1", "--train-iterations", "1",
         "--train-prompts", "1", "--train-samples", "2", "--grad-variance", "--grad-repeats", "2",
         "--grad-prompts", "1", "--grad-samples", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_bench_reports_every_line(report):
    names = [line["name"] for line in report["results"]]
    expected_s1 = [f"S1 policy overhead {decider} B={batch}" for batch in (1, 2)
                   for decider in ("learned-greedy", "learned-sample", "heuristic-confidence")]
    assert names[:6] == expected_s1
    assert names[6].startswith("S2 env overhead")
    assert names[7].startswith("S3 batching")
    assert names[8].startswith("train throughput")
    assert names[9] == "gradient variance rb_rloo / rloo"
    assert len(names) == 10


def test_bench_times_positive(report):
    for line in report["results"]:
        assert set(line) == LINE_KEYS, line["name"]
        assert line["times"], line["name"]
        for key, seconds in line["times"].items():
            assert seconds > 0, (line["name"], key)


def test_bench_ratios_and_goals(report):
    for line in report["results"]:
        if line["goal"] is None:
            continue
        assert line["ratio"] > 0, line["name"]
        assert line["met"] is check_goal(line["ratio"], line["goal"]), line["name"]
    s1 = report["results"][0]
    assert s1["ratio"] == pytest.approx(s1["times"]["policy_s"] / s1["times"]["denoiser_s"])
    s2 = report["results"][6]
    assert s2["ratio"] == pytest.approx(s2["times"]["env_s"] / s2["times"]["plain_loop_s"])


def test_bench_training_and_variance(report):
    train, variance = report["results"][8], report["results"][9]
    assert train["extra"]["samples_per_second"] > 0
    assert 0 < train["extra"]["rollout_share"] <= 1
    rloo, rb = variance["extra"]["total_variance_rloo"], variance["extra"]["total_variance_rb_rloo"]
    assert rloo > 0
    assert rb >= 0
    assert variance["ratio"] == pytest.approx(rb / rloo)


def test_bench_records_machine(report):
    assert report["model"] == "shipped"
    assert {"platform", "processor", "cpu_count", "torch", "device"} <= set(report["machine"])
    assert report["settings"]["repeats"] == 1


def test_check_goal_operators():
    assert check_goal(0.02, "<= 0.03")
    assert not check_goal(0.04, "<= 0.03")
    assert check_goal(8.0, ">= 8")
    assert not check_goal(7.9, ">= 8")
    assert not check_goal(1.0, "< 1")


def test_median_seconds_counts_calls():
    calls = []
    seconds = median_seconds(lambda: calls.append(1), repeats=3, warmup=2, device=torch.device("cpu"))
    assert len(calls) == 5
    assert seconds >= 0
    assert math.isfinite(seconds)


def test_settings_reject_single_gradient():
    with pytest.raises(ValueError, match="grad_repeats"):
        BenchSettings(grad_repeats=1)
