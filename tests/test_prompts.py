"""GSM8K prompt formats: plain, lm-eval few-shot and chat template."""

from __future__ import annotations

import pytest

from orderpolicy.tasks.gsm8k import read_jsonl
from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate
from orderpolicy.tasks.prompts import (
    LM_EVAL_STOP_STRINGS,
    STOP_STRINGS,
    build_prompts,
    choose_shots,
    format_question,
)
from standin_models import word_tokenizer

# A minimal chat template in the style of LLaDA-Instruct's: one header per turn,
# <|eot_id|> after each message, and an assistant header when a reply is due.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def problems():
    return generate(GsmSynthConfig(), "test", 4, seed=3)


@pytest.fixture(scope="module")
def pool():
    return generate(GsmSynthConfig(), "train", 40, seed=4)


@pytest.fixture()
def chat_tokenizer():
    tokenizer = word_tokenizer(("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_plain_is_question(problems):
    prompts = build_prompts(problems)
    assert prompts == [problem.question for problem in problems]


def test_zero_shot_is_lm_eval_query(problems):
    prompts = build_prompts(problems, format="fewshot")
    assert prompts[0] == f"Question: {problems[0].question}\nAnswer:"


def test_fewshot_layout(problems, pool):
    prompt = build_prompts(problems[:1], format="fewshot", shots=3, shot_pool=pool, seed=0)[0]
    blocks = prompt.split("\n\n")
    assert len(blocks) == 4
    assert blocks[-1] == format_question(problems[0].question)
    by_question = {example.question: example for example in pool}
    for block in blocks[:-1]:
        question_line, answer = block.split("\nAnswer: ", 1)
        question = question_line.removeprefix("Question: ")
        assert question in by_question, question
        assert answer == by_question[question].answer


def test_shots_follow_seed(problems, pool):
    first = build_prompts(problems, format="fewshot", shots=3, shot_pool=pool, seed=0)
    again = build_prompts(problems, format="fewshot", shots=3, shot_pool=pool, seed=0)
    other = build_prompts(problems, format="fewshot", shots=3, shot_pool=pool, seed=1)
    assert first == again
    assert first != other


def test_shots_independent_of_batch_order(problems, pool):
    forward = build_prompts(problems, format="fewshot", shots=2, shot_pool=pool, seed=5)
    backward = build_prompts(problems[::-1], format="fewshot", shots=2, shot_pool=pool, seed=5)
    assert forward == backward[::-1]


def test_shots_exclude_the_problem(problems):
    pool_with_problem = list(problems)
    for seed in range(20):
        shots = choose_shots(problems[0], pool_with_problem, len(problems) - 1, seed)
        assert problems[0] not in shots


def test_chat_format(problems, chat_tokenizer):
    prompt = build_prompts(problems[:1], format="chat", tokenizer=chat_tokenizer)[0]
    expected = (
        f"<|start_header_id|>user<|end_header_id|>\n\n{problems[0].question}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert prompt == expected


def test_chat_format_with_shots(problems, pool, chat_tokenizer):
    prompt = build_prompts(
        problems[:1], format="chat", tokenizer=chat_tokenizer, shots=2, shot_pool=pool, seed=0
    )[0]
    fewshot = build_prompts(problems[:1], format="fewshot", shots=2, shot_pool=pool, seed=0)[0]
    assert f"<|end_header_id|>\n\n{fewshot}<|eot_id|>" in prompt


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "fewshoot"}, "did you mean 'fewshot'"),
        ({"format": "chat"}, "needs the model's tokenizer"),
        ({"format": "plain", "shots": 2, "shot_pool": []}, "has no shots"),
        ({"format": "fewshot", "shots": 2}, "needs a shot_pool"),
        ({"format": "fewshot", "shots": -1}, "shots must be >= 0"),
    ],
)
def test_invalid_requests(problems, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_prompts(problems, **kwargs)


def test_chat_without_template_raises(problems):
    with pytest.raises(ValueError, match="no chat_template"):
        build_prompts(problems, format="chat", tokenizer=word_tokenizer())


def test_small_shot_pool_raises(problems, pool):
    with pytest.raises(ValueError, match="fewer than shots=5"):
        build_prompts(problems, format="fewshot", shots=5, shot_pool=pool[:4])


def test_real_gsm8k_fewshot(gsm8k_dir):
    train = read_jsonl(gsm8k_dir / "train.jsonl", limit=200)
    test = read_jsonl(gsm8k_dir / "test.jsonl", limit=3)
    prompts = build_prompts(test, format="fewshot", shots=5, shot_pool=train, seed=1234)
    for problem, prompt in zip(test, prompts):
        assert prompt.count("Question: ") == 6
        assert prompt.count("\n#### ") == 5
        assert prompt.endswith(format_question(problem.question))


def test_stop_strings_absent_from_real_answers(gsm8k_dir):
    # A stop string inside a reference answer would cut a correct generation short.
    train = read_jsonl(gsm8k_dir / "train.jsonl")
    for problem in train:
        found = [stop for stop in LM_EVAL_STOP_STRINGS if stop in problem.answer]
        assert not found, (problem.question[:60], found)


def test_blank_line_stop_is_rare_in_real_answers(gsm8k_dir):
    train = read_jsonl(gsm8k_dir / "train.jsonl")
    assert "\n\n" in STOP_STRINGS
    cut = [problem for problem in train if "\n\n" in problem.answer]
    assert 0 < len(cut) <= len(train) // 1000  # the NOTE beside STOP_STRINGS counts them
