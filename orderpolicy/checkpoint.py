"""Atomic checkpoint files: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save ``obj`` with ``torch.save`` so that ``path`` is either old or new, never partial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save(obj, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`atomic_torch_save`, with a clear error if absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; check the path or drop --resume")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ValueError(f"checkpoint {path} could not be read ({error}); it may be from another tool") from error
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"checkpoint {path} contains a {type(checkpoint).__name__}, not a dict; "
            "pass a file written by this project's training scripts"
        )
    return checkpoint
