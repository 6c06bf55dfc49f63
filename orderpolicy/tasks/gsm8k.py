"""The real GSM8K benchmark (Cobbe et al., 2021) as :class:`Problem` records.

Records come from a local JSONL file in the format of the original release
(one object per line with string keys ``question`` and ``answer``) or, when no
file is given, from the Hugging Face dataset ``openai/gsm8k`` (config
``main``) through ``datasets``. The answer's last line is ``#### N``, and
``target`` is ``N`` normalised by :func:`~orderpolicy.tasks.scoring.normalize_number`
(``1,080`` becomes ``1080``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from orderpolicy.tasks.base import Problem
from orderpolicy.tasks.scoring import extract_strict

HF_DATASET = "openai/gsm8k"
HF_CONFIG = "main"
SPLITS = ("train", "test")
_KEYS = ("question", "answer")


def load_gsm8k(
    split: str = "test", *, path: str | Path | None = None, limit: int | None = None
) -> list[Problem]:
    """Load GSM8K problems in file order.

    With ``path`` the JSONL file is read and ``split`` is not used. Without it
    the ``split`` of ``openai/gsm8k`` is loaded through ``datasets``, which
    needs network access or a warm Hugging Face cache. ``limit`` keeps the
    first ``limit`` problems.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if path is not None:
        return read_jsonl(path, limit=limit)
    if split not in SPLITS:
        raise ValueError(f"GSM8K split must be one of {SPLITS}, got {split!r}")
    return _load_from_hub(split, limit)


def read_jsonl(path: str | Path, *, limit: int | None = None) -> list[Problem]:
    """Read GSM8K records from a JSONL file; errors name the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GSM8K file not found: {path}; pass --data PATH to a GSM8K JSONL file "
            f"(keys 'question' and 'answer'), or omit --data to download {HF_DATASET} via `datasets`"
        )
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"invalid JSON in {where}: {error.msg} at column {error.colno}") from error
            problems.append(parse_record(record, where))
    if not problems and limit != 0:
        raise ValueError(f"GSM8K file {path} contains no records; expected one JSON object per line")
    return problems


def parse_record(record: Any, where: str) -> Problem:
    """Build a :class:`Problem` from one GSM8K record; ``where`` names it in errors."""
    if not isinstance(record, Mapping):
        raise ValueError(f"GSM8K record in {where} must be a JSON object, got {type(record).__name__}")
    missing = [key for key in _KEYS if key not in record]
    if missing:
        raise ValueError(f"GSM8K record in {where} is missing key(s) {missing}; expected keys {list(_KEYS)}")
    for key in _KEYS:
        if not isinstance(record[key], str):
            raise ValueError(f"GSM8K record in {where}: {key!r} must be a string, got {type(record[key]).__name__}")
    answer = record["answer"]
    if "####" not in answer:
        raise ValueError(f"GSM8K answer in {where} is missing the final '#### N' line")
    target = extract_strict(answer)
    if target is None:
        raise ValueError(f"GSM8K answer in {where} has no number after '####': {answer[-40:]!r}")
    return Problem(question=record["question"], answer=answer, target=target)


def _load_from_hub(split: str, limit: int | None) -> list[Problem]:
    import datasets  # imported here: loading a local file must not need it

    try:
        rows: Iterable[Mapping[str, Any]] = datasets.load_dataset(HF_DATASET, HF_CONFIG, split=split)
    except (OSError, ConnectionError, ValueError) as error:
        # Offline runs land here: datasets raises ConnectionError or a FileNotFoundError subclass.
        raise RuntimeError(
            f"could not load {HF_DATASET} ({HF_CONFIG}, split {split!r}) through `datasets`: {error}; "
            "without network access pass --data PATH to a local GSM8K JSONL file"
        ) from error
    problems = []
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            break
        problems.append(parse_record(row, f"{HF_DATASET} {split} row {index}"))
    return problems
