"""Shared pytest fixtures: the real GSM8K files, when this checkout has them."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's data folder sits beside the repository root; clones elsewhere lack it.
GSM8K_DIR = REPO_ROOT.parent / "shared" / "data" / "gsm8k"


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """Folder with GSM8K's train.jsonl and test.jsonl; skips the test when it is absent."""
    missing = [name for name in ("train.jsonl", "test.jsonl") if not (GSM8K_DIR / name).is_file()]
    if missing:
        pytest.skip(f"GSM8K data not found: {missing} missing in {GSM8K_DIR}")
    return GSM8K_DIR
