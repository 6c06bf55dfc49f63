"""GSM8K prompt formats: the bare question, lm-eval's few-shot text, and a chat turn.

- ``plain``: the question alone. The built-in MDM is trained on this form.
- ``fewshot``: the format of lm-evaluation-harness's ``gsm8k`` task. Each
  shot is ``Question: {q}\\nAnswer: {full worked answer}`` followed by a blank
  line, and the prompt ends with ``Question: {q}\\nAnswer:``. With ``shots=0``
  it is lm-eval's zero-shot prompt.
- ``chat``: one user turn rendered by the tokenizer's chat template with the
  assistant prefix appended, as Instruct models (LLaDA-8B-Instruct,
  Dream-v0-Instruct-7B) expect. The user message is the question, or the
  few-shot text when ``shots > 0``.

Shots are drawn without replacement from ``shot_pool`` (normally the train
split), never include the problem itself, and depend only on ``seed`` and the
question text. So a problem gets the same shots in any batch and any order.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence

from orderpolicy.tasks.base import Problem

PROMPT_FORMATS = ("plain", "fewshot", "chat")
# Stop strings of lm-eval's gsm8k task in its current version. Generated text
# is cut at the first of them before scoring.
LM_EVAL_STOP_STRINGS = ("Question:", "</s>", "<|im_end|>")
# Older versions of the task also stopped at a blank line, which ends a few-shot
# answer before the next "Question:".
# NOTE: 4 of 7473 train and 2 of 1319 test reference answers of GSM8K contain a
# blank line, so this set cuts those answers short; LM_EVAL_STOP_STRINGS does not.
STOP_STRINGS = LM_EVAL_STOP_STRINGS + ("\n\n",)


def format_question(question: str) -> str:
    """Render one question as lm-eval's gsm8k query, ending where the answer starts."""
    return f"Question: {question}\nAnswer:"


def format_shot(problem: Problem) -> str:
    """Render a solved example as lm-eval does: query, one space, answer, blank line."""
    return f"{format_question(problem.question)} {problem.answer}\n\n"


def choose_shots(problem: Problem, pool: Sequence[Problem], shots: int, seed: int) -> list[Problem]:
    """Draw ``shots`` examples from ``pool`` for ``problem``, deterministically by seed.

    Raises ``ValueError`` when the pool contains fewer than ``shots`` other problems.
    """
    candidates = [example for example in pool if example.question != problem.question]
    if len(candidates) < shots:
        raise ValueError(
            f"shot pool has {len(candidates)} problem(s) other than the question, fewer than "
            f"shots={shots}; pass a larger shot_pool (e.g. the train split) or lower shots"
        )
    # A str seed is hashed with SHA-512 by random.seed, so it is stable across runs.
    rng = random.Random(f"{seed}:{problem.question}")
    return rng.sample(candidates, shots)


def fewshot_text(problem: Problem, pool: Sequence[Problem], shots: int, seed: int) -> str:
    """Render ``shots`` solved examples followed by the query for ``problem``."""
    examples = choose_shots(problem, pool, shots, seed) if shots else []
    return "".join(format_shot(example) for example in examples) + format_question(problem.question)


def chat_prompt(tokenizer, content: str) -> str:
    """Wrap ``content`` in one user turn of the chat template, followed by the assistant prefix."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no chat_template; the chat format needs an "
            "Instruct model's tokenizer, or use format 'plain' or 'fewshot'"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def _check_request(format: str, tokenizer, shots: int, shot_pool) -> None:
    if format not in PROMPT_FORMATS:
        close = difflib.get_close_matches(format, PROMPT_FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown prompt format {format!r}{hint} Valid formats: {list(PROMPT_FORMATS)}")
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    if format == "plain" and shots:
        raise ValueError(f"format 'plain' has no shots, got shots={shots}; use format 'fewshot' or 'chat'")
    if shots and shot_pool is None:
        raise ValueError(f"shots={shots} needs a shot_pool, e.g. the GSM8K train split")
    if format == "chat" and tokenizer is None:
        raise ValueError("format 'chat' needs the model's tokenizer for its chat template")


def build_prompts(
    problems: Sequence[Problem],
    format: str = "plain",
    tokenizer=None,
    shots: int = 0,
    shot_pool: Sequence[Problem] | None = None,
    seed: int = 0,
) -> list[str]:
    """Build one prompt string per problem in the requested format.

    ``tokenizer`` is needed for ``chat`` only; ``shots`` and ``shot_pool``
    apply to ``fewshot`` and ``chat``. Only the chat template writes special
    tokens (such as BOS) into the text; the other formats contain none.
    """
    _check_request(format, tokenizer, shots, shot_pool)
    prompts = []
    for problem in problems:
        if format == "plain":
            prompts.append(problem.question)
        elif format == "fewshot":
            prompts.append(fewshot_text(problem, shot_pool or [], shots, seed))
        elif shots:
            prompts.append(chat_prompt(tokenizer, fewshot_text(problem, shot_pool, shots, seed)))
        else:
            prompts.append(chat_prompt(tokenizer, problem.question))
    return prompts
