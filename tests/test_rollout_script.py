"""scripts/rollout.py end to end, and the evaluation library and task reward it runs on.

Shapes: n problems, L response length.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orderpolicy.decoding.rules import HeuristicRule
from orderpolicy.decoding.strategies import STRATEGIES
from orderpolicy.evaluation import (
    annotate_unmask_steps,
    evaluate_rule,
    parse_strategy_specs,
    read_train_config,
    synth_config_from,
)
from orderpolicy.evaluation.rollout import build_source
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.tasks import load_problems
from orderpolicy.tasks.gsm8k import load_gsm8k
from orderpolicy.tasks.reward import decode_responses, make_task_reward
from orderpolicy.tasks.scoring import is_correct

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "rollout.py"
SUMMARY_KEYS = {"label", "problems", "accuracy", "consistency", "mean_steps", "max_steps", "mean_nfe",
                "tokens_per_second", "seconds"}


def run_script(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *options], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(None)


@pytest.fixture(scope="module")
def train_config():
    return read_train_config(None)


@pytest.fixture(scope="module")
def problems(train_config):
    return load_problems("gsm-synth", num_problems=5, seed=3, synth_config=synth_config_from(train_config))


def evaluate(adapter, train_config, problems, rule, **kwargs):
    return evaluate_rule(adapter, problems, rule, prompt_length=train_config["prompt_length"],
                         response_length=train_config["response_length"], progress=False, **kwargs)


# The script ---------------------------------------------------------------------------------


def test_script_json_summary(train_config):
    done = run_script("--num-problems", "4", "--batch-size", "4", "--steps", "4",
                      "--strategy", "confidence,threshold", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    confidence, threshold = report["results"]
    assert set(confidence) == SUMMARY_KEYS
    assert [confidence["label"], threshold["label"]] == ["confidence@4", "threshold@0.9"]
    assert confidence["problems"] == 4
    assert confidence["mean_steps"] == 4
    assert confidence["max_steps"] == 4
    assert confidence["mean_nfe"] == confidence["mean_steps"]
    assert threshold["mean_nfe"] == threshold["mean_steps"]
    assert 1 <= threshold["mean_steps"] <= threshold["max_steps"] <= train_config["response_length"]
    assert 0 <= confidence["accuracy"] <= 1
    assert report["settings"]["response_length"] == train_config["response_length"]


def test_script_runs_on_gsm8k(gsm8k_dir):
    done = run_script("--task", "gsm8k", "--data", str(gsm8k_dir / "test.jsonl"), "--num-problems", "4",
                      "--steps", "4", "--strategy", "confidence")
    assert done.returncode == 0, done.stderr
    assert "confidence@4" in done.stdout
    assert "[UNK] tokens in all" in done.stderr


def test_script_decodes_learned_policy(adapter, tmp_path):
    posterior = pytest.importorskip("orderpolicy.posterior")
    from orderpolicy.posterior.network import PosteriorConfig, PosteriorNet

    torch.manual_seed(0)
    net = PosteriorNet(PosteriorConfig(use_hidden=True), hidden_size=adapter.hidden_size)
    posterior.save_policy(tmp_path / "untrained.pt", net, adapter)
    done = run_script("--policy", str(tmp_path / "untrained.pt"), "--policy-mode", "sample", "--strategy", "none",
                      "--num-problems", "2", "--batch-size", "2", "--max-steps", "8", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["label"] == "untrained-sample"
    assert result["max_steps"] <= 8
    assert result["mean_nfe"] == result["mean_steps"]


def test_script_rejects_unknown_strategy():
    done = run_script("--strategy", "confidence,confidnce", "--json")
    assert done.returncode != 0
    assert "'confidnce'" in done.stderr
    assert done.stdout == ""


# The evaluation library ---------------------------------------------------------------------


def test_partial_last_batch_matches_one_batch(adapter, train_config, problems):
    rule = HeuristicRule("confidence", train_config["response_length"], steps=4)
    split = evaluate(adapter, train_config, problems, rule, batch_size=2)
    whole = evaluate(adapter, train_config, problems, rule, batch_size=len(problems))
    assert torch.equal(split.response, whole.response)
    assert torch.equal(split.unmask_step, whole.unmask_step)
    assert split.texts == whole.texts


def test_env_and_plain_sampler_agree(adapter, train_config, problems):
    rule = HeuristicRule("random", train_config["response_length"], steps=4)
    settings = dict(batch_size=2, temperature=0.7, seed=11)
    with_env = evaluate(adapter, train_config, problems, rule, use_env=True, **settings)
    plain = evaluate(adapter, train_config, problems, rule, use_env=False, **settings)
    assert torch.equal(with_env.response, plain.response)
    assert torch.equal(with_env.correct, plain.correct)
    assert torch.equal(with_env.nfe, plain.nfe)


def test_summary_matches_per_problem_scores(adapter, train_config, problems):
    rule = HeuristicRule("threshold", train_config["response_length"], threshold=0.9)
    result = evaluate(adapter, train_config, problems, rule, batch_size=5)
    summary = result.summary()
    expected = [float(is_correct(text, p.target)) for text, p in zip(result.texts, problems)]
    assert result.correct.tolist() == expected
    assert summary["accuracy"] == pytest.approx(sum(expected) / len(expected))
    assert summary["mean_nfe"] == summary["mean_steps"]
    assert summary["max_steps"] == int(result.steps.max())
    assert summary["label"] == "threshold@0.9"
    assert summary["tokens_per_second"] > 0


def test_build_source_truncates_with_warning(adapter, gsm8k_dir, caplog):
    gsm8k = load_gsm8k(path=gsm8k_dir / "test.jsonl", limit=4)
    lengths = [len(ids) for ids in adapter.tokenizer([p.question for p in gsm8k], add_special_tokens=False)["input_ids"]]
    prompt_length = sorted(lengths)[1]  # at least two prompts are longer
    expected = sum(length > prompt_length for length in lengths)
    settings = dict(prompt_length=prompt_length, response_length=72, pad_id=adapter.pad_token_id,
                    eos_id=adapter.eos_token_id)
    with pytest.raises(ValueError, match=f"{expected} prompt\\(s\\) exceed prompt_length={prompt_length}"):
        build_source(gsm8k, adapter.tokenizer, **settings)
    with caplog.at_level(logging.WARNING):
        source = build_source(gsm8k, adapter.tokenizer, truncate_prompts=True, **settings)
    assert f"truncated {expected} of 4 prompt(s)" in caplog.text
    assert source.prompt_mask.sum(dim=1).max() == prompt_length


def test_parse_all_strategies():
    rules = parse_strategy_specs("all", 72, 4)
    assert [rule.name for rule in rules] == list(STRATEGIES)


def test_parse_list_and_threshold_override():
    rules = parse_strategy_specs("eb, margin", 72, 8, ["eb=0.3"])
    assert [rule.label for rule in rules] == ["eb@0.3", "margin@8"]


@pytest.mark.parametrize(
    ("text", "thresholds", "message"),
    [
        ("confidence,confidnce", [], "'confidnce'"),
        ("confidence", ["confidence=0.5"], "takes no threshold"),
        ("confidence", ["eb=0.5"], "does not include"),
        ("threshold", ["threshold"], "NAME=VALUE"),
        ("threshold", ["threshold=high"], "needs a number"),
        ("margin,margin", [], "more than once"),
        ("all,margin", [], "'all'"),
    ],
)
def test_parse_rejects_invalid_lists(text, thresholds, message):
    with pytest.raises(ValueError, match=message):
        parse_strategy_specs(text, 72, 4, thresholds)


# Task reward and reports ---------------------------------------------------------------------


def encode_answers(adapter, answers: list[str], length: int = 72) -> torch.Tensor:
    ids = torch.full((len(answers), length), adapter.eos_token_id)
    for row, answer in enumerate(answers):
        tokens = adapter.tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids  # (B, L)


def test_task_reward_scores_reference_answers(adapter, problems):
    reward = make_task_reward(adapter.tokenizer)
    ids = encode_answers(adapter, [p.answer for p in problems])
    targets = torch.tensor([[float(p.target)] for p in problems], dtype=torch.float64)  # (B, 1)
    assert reward(ids, targets).tolist() == [1.0] * len(problems)
    assert reward(ids, targets + 1).tolist() == [0.0] * len(problems)
    assert reward(ids, torch.full_like(targets, math.nan)).tolist() == [0.0] * len(problems)


def test_response_ends_at_first_eos(adapter):
    ids = encode_answers(adapter, ["#### 5"])
    end = int((ids[0] == adapter.eos_token_id).nonzero()[0])
    ids[0, end + 1] = adapter.tokenizer.convert_tokens_to_ids("7")
    ids[0, end + 2] = adapter.mask_token_id
    assert decode_responses(adapter.tokenizer, ids) == ["#### 5"]
    assert make_task_reward(adapter.tokenizer)(ids, torch.tensor([[5.0]], dtype=torch.float64)).item() == 1.0


def test_decoded_text_drops_pad_and_mask(adapter):
    ids = encode_answers(adapter, ["So 2+3=<<2+3=5>>5."])
    ids[0, 1] = adapter.pad_token_id
    ids[0, 2] = adapter.mask_token_id
    assert decode_responses(adapter.tokenizer, ids) == ["So+3=<<2+3=5>>5."]


def test_annotation_tags_each_token(adapter):
    ids = encode_answers(adapter, ["So 4\n#### 4"], length=8)  # So, " ", 4, \n, ####, " ", 4, EOS
    steps = torch.arange(8)
    text = annotate_unmask_steps(adapter.tokenizer, ids[0], steps)
    assert text == "So[0] [1]4[2]\\n[3]\n####[4] [5]4[6][EOS][7]"
