"""Tasks: word problems in GSM8K's answer format, chosen by name.

- ``gsm-synth``: procedural problems, see :mod:`orderpolicy.tasks.gsm_synth`;
- ``gsm8k``: the real benchmark, see :mod:`orderpolicy.tasks.gsm8k`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from orderpolicy.tasks.base import Problem
from orderpolicy.tasks.gsm8k import load_gsm8k
from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate

TASKS = ("gsm-synth", "gsm8k")
DEFAULT_SYNTH_PROBLEMS = 500  # gsm-synth problems generated when num_problems is None

__all__ = ["DEFAULT_SYNTH_PROBLEMS", "TASKS", "Problem", "load_problems"]


def load_problems(
    name: str,
    *,
    split: str = "test",
    num_problems: int | None = None,
    seed: int = 0,
    data: str | Path | None = None,
    synth_config: GsmSynthConfig | None = None,
) -> list[Problem]:
    """Return the problems of task ``name`` for ``split`` ("train" or "test").

    gsm-synth generates ``num_problems`` problems (500 when None) from
    ``synth_config`` (defaults when None) and ``seed``, and takes no ``data``.
    gsm8k reads the JSONL file ``data``, or downloads the split through
    ``datasets`` when ``data`` is None. It keeps the first ``num_problems``
    records (all when None) and does not use ``seed`` or ``synth_config``.
    """
    if name == "gsm-synth":
        if data is not None:
            raise ValueError(
                f"task gsm-synth generates its problems and reads no data file, got data={str(data)!r}; "
                "drop --data or choose the task gsm8k"
            )
        count = DEFAULT_SYNTH_PROBLEMS if num_problems is None else num_problems
        return generate(synth_config or GsmSynthConfig(), split, count, seed)
    if name == "gsm8k":
        return load_gsm8k(split, path=data, limit=num_problems)
    close = difflib.get_close_matches(name, TASKS, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown task {name!r}; valid tasks are {list(TASKS)}.{hint}")
