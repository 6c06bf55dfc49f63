"""The built-in MDM training script end to end, at a tiny size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import yaml

from orderpolicy.checkpoint import load_checkpoint
from orderpolicy.mdm.hf_masked_lm import HFMaskedLMAdapter

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "steps=4", "eval_interval=2", "train_problems=64", "eval_problems=8", "greedy_eval_problems=2",
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=32",
    "batch_size=4", "warmup_steps=1",
]


def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "scripts/train_mdm.py"), "--config", str(REPO / "configs/mdm.yaml"), "--out", str(out)]
    for item in TINY:
        args += ["--set", item]
    return subprocess.run(args + list(extra), cwd=REPO, capture_output=True, text=True, timeout=600)


def test_train_mdm_exports_loadable_model(tmp_path):
    result = run(tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / "run" / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "orderpolicy_train_config.yaml"):
        assert (folder / name).is_file(), name
    adapter = HFMaskedLMAdapter.from_pretrained(folder)
    ids = torch.full((1, 10), adapter.mask_token_id)
    assert adapter.denoise(ids, torch.ones_like(ids)).logits.shape == (1, 10, adapter.vocab_size)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["steps"] == 4
    history = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]
    assert [row["step"] for row in history] == [2, 4]
    assert all("eval_loss" in row and "greedy_accuracy" in row for row in history)


def test_train_mdm_resume_continues(tmp_path):
    first = run(tmp_path / "run", "--set", "steps=2")
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run(tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]
    assert [row["step"] for row in history] == [2, 4]


def test_train_mdm_unknown_key_rejected(tmp_path):
    result = run(tmp_path / "run", "--set", "stpes=3")
    assert result.returncode != 0
    assert "steps" in result.stderr
