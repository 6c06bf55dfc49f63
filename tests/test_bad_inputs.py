"""Bad inputs across the package: each raises a clear error or has a documented, tested behaviour.

Every test asserts the exception type and that the message names the wrong
value and the fix, so a raw traceback from inside torch or transformers fails
it. docs/reliability.md lists these cases in a table.

Shapes: B batch, P prompt width, L response length, V vocabulary.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import ModernBertConfig, ModernBertForMaskedLM

from envs.decoding import InvalidActionError, MDMDecodingEnv
from orderpolicy.batching import encode_prompts
from orderpolicy.checkpoint import atomic_torch_save, load_checkpoint
from orderpolicy.config import ConfigError, from_dict, load_config
from orderpolicy.decoding.rules import HeuristicRule
from orderpolicy.decoding.sampler import decode
from orderpolicy.decoding.stats import NonFiniteLogitsError
from orderpolicy.decoding.strategies import get_strategy
from orderpolicy.mdm.builtin import default_mdm_path
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.mdm.loading import load_adapter
from orderpolicy.mdm.training import MDMTrainConfig
from orderpolicy.problem_source import ProblemSource
from orderpolicy.tasks import load_problems
from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate
from orderpolicy.tokenizer import UNK, encode_texts

L = 8  # response length of every env in this file
P = 32  # prompt width; fits the one-operation gsm-synth prompts


@functools.lru_cache(maxsize=1)
def shipped_adapter() -> MDMAdapter:
    return load_adapter()


def short_problems(count: int = 8):
    return generate(GsmSynthConfig(min_ops=1, max_ops=1), "test", count, seed=0)


def make_source(adapter: MDMAdapter, problems=None) -> ProblemSource:
    return ProblemSource(
        problems or short_problems(),
        adapter.tokenizer,
        prompt_length=P,
        response_length=L,
        pad_id=adapter.pad_token_id,
        eos_id=adapter.eos_token_id,
    )


def make_env(adapter: MDMAdapter | None = None, **kwargs) -> MDMDecodingEnv:
    adapter = adapter or shipped_adapter()
    options = dict(batch_size=2, prompt_length=P, response_length=L)
    options.update(kwargs)
    return MDMDecodingEnv(adapter, make_source(shipped_adapter()), **options)


# Names of strategies and adapters ---------------------------------------------


def test_unknown_strategy_suggests_nearest():
    with pytest.raises(ValueError) as error:
        get_strategy("confidance")
    assert "'confidance'" in str(error.value)
    assert "Did you mean 'confidence'" in str(error.value)


def test_rule_with_unknown_strategy_rejected():
    with pytest.raises(ValueError) as error:
        HeuristicRule("entropie", response_length=L, steps=4)
    assert "'entropie'" in str(error.value)
    assert "'entropy'" in str(error.value)


def test_unknown_adapter_suggests_nearest():
    with pytest.raises(ValueError) as error:
        load_adapter(adapter="llda")
    assert "'llda'" in str(error.value)
    assert "did you mean 'llada'" in str(error.value)


# Step budgets, thresholds, blocks, temperature --------------------------------


@pytest.mark.parametrize("steps", [0, -1, L + 1, None])
def test_steps_outside_range_rejected(steps):
    with pytest.raises(ValueError) as error:
        HeuristicRule("confidence", response_length=L, steps=steps)
    assert f"steps={steps}" in str(error.value)
    assert f"1 <= steps <= response length {L}" in str(error.value)


@pytest.mark.parametrize("steps", [1, L])
def test_steps_at_bounds_accepted(steps):
    assert HeuristicRule("confidence", response_length=L, steps=steps).steps == steps


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5, math.nan])
def test_threshold_outside_unit_interval_rejected(threshold):
    with pytest.raises(ValueError) as error:
        HeuristicRule("threshold", response_length=L, threshold=threshold)
    assert "(0, 1]" in str(error.value)
    assert f"got {threshold}" in str(error.value)


def test_threshold_of_one_accepted():
    assert HeuristicRule("threshold", response_length=L, threshold=1.0).threshold == 1.0


@pytest.mark.parametrize("max_steps", [0, L + 1])
def test_env_max_steps_outside_range_rejected(max_steps):
    with pytest.raises(ValueError) as error:
        make_env(max_steps=max_steps)
    assert f"[1, {L}]" in str(error.value)
    assert f"got {max_steps}" in str(error.value)


@pytest.mark.parametrize("block_length", [0, 3, 2 * L])
def test_block_length_not_dividing_rejected(block_length):
    with pytest.raises(ValueError) as env_error:
        make_env(block_length=block_length)
    with pytest.raises(ValueError) as rule_error:
        HeuristicRule("confidence", response_length=L, steps=L, block_length=block_length)
    expected = f"block_length={block_length} must be a positive divisor of response_length={L}"
    assert expected in str(env_error.value)
    assert expected in str(rule_error.value)


@pytest.mark.parametrize("temperature", [-1.0, math.nan, math.inf])
def test_env_temperature_invalid_rejected(temperature):
    with pytest.raises(ValueError) as error:
        make_env(temperature=temperature)
    assert f"got {temperature}" in str(error.value)
    assert "finite number >= 0" in str(error.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
        (dict(temperature=math.nan), "temperature must be a finite number >= 0"),
        (dict(max_steps=0), f"max_steps must lie in [1, {L}]"),
        (dict(block_length=3), f"block_length=3 must be a positive divisor of response_length={L}"),
    ],
)
def test_sampler_invalid_settings_rejected(kwargs, message):
    source = make_source(shipped_adapter())
    batch = source(2)
    rule = HeuristicRule("confidence", response_length=L, steps=4)
    with pytest.raises(ValueError) as error:
        decode(shipped_adapter(), batch["prompt_ids"], batch["prompt_mask"], L, rule, **kwargs)
    assert message in str(error.value)


# GSM8K files ------------------------------------------------------------------


def test_gsm8k_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ValueError) as error:
        load_problems("gsm8k", data=path)
    assert str(path) in str(error.value)
    assert "contains no records" in str(error.value)


def test_gsm8k_malformed_line_names_line_number(tmp_path):
    good = '{"question": "Q?", "answer": "So 1+1=2.\\n#### 2"}'
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{good}\n{{\"question\": \"Q?\", \n")
    with pytest.raises(ValueError) as error:
        load_problems("gsm8k", data=path)
    assert f"{path}, line 3" in str(error.value)
    assert "invalid JSON" in str(error.value)


def test_gsm8k_record_without_marker_rejected(tmp_path):
    path = tmp_path / "nomarker.jsonl"
    path.write_text('{"question": "Q?", "answer": "#### 2"}\n{"question": "Q?", "answer": "The answer is 2."}\n')
    with pytest.raises(ValueError) as error:
        load_problems("gsm8k", data=path)
    assert f"{path}, line 2" in str(error.value)
    assert "missing the final '#### N' line" in str(error.value)


# Prompt and sequence lengths -------------------------------------------------


def long_prompts() -> list[str]:
    problems = generate(GsmSynthConfig(min_ops=4, max_ops=4), "test", 2, seed=0)
    return [short_problems(1)[0].question, problems[0].question]


def test_long_prompt_names_its_index():
    tokenizer = shipped_adapter().tokenizer
    prompts = long_prompts()
    length = len(encode_texts(tokenizer, prompts[1:])[0])
    with pytest.raises(ValueError) as error:
        encode_prompts(tokenizer, prompts, P, pad_id=tokenizer.pad_token_id)
    assert f"prompt 1 has {length} tokens, more than prompt_length={P}" in str(error.value)
    assert "enable truncation" in str(error.value)


def test_problem_source_long_prompt_rejected():
    adapter = shipped_adapter()
    problems = short_problems(3) + generate(GsmSynthConfig(min_ops=4, max_ops=4), "test", 1, seed=0)
    with pytest.raises(ValueError) as error:
        make_source(adapter, problems)
    assert "prompt 3 has" in str(error.value)
    assert f"prompt_length={P}" in str(error.value)


def test_truncation_keeps_prompt_tail():
    tokenizer = shipped_adapter().tokenizer
    prompts = long_prompts()
    full = encode_texts(tokenizer, prompts[1:])[0]
    ids, mask = encode_prompts(tokenizer, prompts, P, pad_id=tokenizer.pad_token_id, truncate=True)
    assert len(full) > P
    assert ids[1].tolist() == full[-P:]
    assert bool(mask[1].all())


def test_env_longer_than_model_rejected():
    adapter = shipped_adapter()
    prompt_length = adapter.max_length - L + 1
    with pytest.raises(ValueError) as error:
        make_env(prompt_length=prompt_length)
    assert f"prompt_length + response_length = {adapter.max_length + 1}" in str(error.value)
    assert f"max_length {adapter.max_length}" in str(error.value)


def test_denoise_longer_than_model_rejected():
    adapter = shipped_adapter()
    length = adapter.max_length + 1
    ids = torch.full((1, length), adapter.mask_token_id)
    with pytest.raises(ValueError) as error:
        adapter.denoise(ids, torch.ones_like(ids))
    assert f"sequence of {length} tokens exceeds the model's maximum of {adapter.max_length}" in str(error.value)


def test_denoise_token_outside_vocabulary_rejected():
    adapter = shipped_adapter()
    ids = torch.full((2, 10), adapter.mask_token_id)
    ids[1, 3] = adapter.vocab_size + 5
    with pytest.raises(ValueError) as error:
        adapter.denoise(ids, torch.ones_like(ids))
    assert f"token ids [{adapter.vocab_size + 5}] in batch rows [1]" in str(error.value)
    assert f"[0, {adapter.vocab_size})" in str(error.value)


def test_env_reference_outside_vocabulary_rejected():
    env = make_env(mode="teacher")
    batch = make_source(shipped_adapter())(2)
    batch["reference"][1, 0] = -3
    with pytest.raises(ValueError) as error:
        env.reset(batch)
    assert "reference in batch row 1 contains token ids [-3]" in str(error.value)


def test_env_reset_without_prompt_mask_names_key():
    env = make_env()
    batch = make_source(shipped_adapter())(2)
    del batch["prompt_mask"]
    with pytest.raises(KeyError) as error:
        env.reset(batch)
    assert "prompt_mask" in str(error.value)


# Tokenizer coverage ----------------------------------------------------------


def test_strict_encoding_names_unknown_pieces():
    tokenizer = shipped_adapter().tokenizer
    with pytest.raises(ValueError) as error:
        encode_texts(tokenizer, ["Tom has 5 apples.", "Tom has 3 € apples."], strict=True)
    assert "'€'" in str(error.value)
    assert "strict=False" in str(error.value)


def test_default_encoding_maps_unknown_to_unk(caplog):
    tokenizer = shipped_adapter().tokenizer
    with caplog.at_level(logging.WARNING, logger="orderpolicy.tokenizer"):
        rows = encode_texts(tokenizer, ["Tom has 3 € apples.", "Ann has 4 ¥ apples €."])
    unk_id = tokenizer.convert_tokens_to_ids(UNK)
    assert rows[0].count(unk_id) == 1
    assert rows[1].count(unk_id) == 2
    assert "mapped 3 unknown piece(s) in 2 text(s)" in caplog.text


# Model folders and checkpoints -----------------------------------------------


@pytest.fixture
def model_copy(tmp_path):
    """A writable copy of the shipped MDM folder."""
    folder = tmp_path / "mdm"
    shutil.copytree(default_mdm_path(), folder)
    return folder


def test_model_folder_with_missing_weights_rejected(model_copy):
    weights = load_file(model_copy / "model.safetensors")
    remaining = {key: value for key, value in weights.items() if ".layers.1." not in key}
    save_file(remaining, model_copy / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_adapter(model_copy)
    assert f"{len(weights) - len(remaining)} missing" in str(error.value)
    assert "model.layers.1." in str(error.value)
    assert str(model_copy) in str(error.value)


def test_model_folder_with_other_model_weights_rejected(model_copy):
    config = ModernBertConfig.from_pretrained(model_copy)
    config.hidden_size, config.intermediate_size = 64, 128
    other = ModernBertForMaskedLM(config)
    save_file({key: value.contiguous() for key, value in other.state_dict().items() if key != "decoder.weight"},
              model_copy / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_adapter(model_copy)
    assert "with another shape" in str(error.value)
    assert "head.dense.weight: file (64, 64), model (256, 256)" in str(error.value)


def test_model_folder_with_corrupt_weights_rejected(model_copy):
    (model_copy / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(ValueError) as error:
        load_adapter(model_copy)
    assert f"could not read the weights of model {model_copy}" in str(error.value)
    assert "export the model again" in str(error.value)


@pytest.mark.parametrize(
    "content", [b"\x80\x04garbage bytes", b"plain text", b""], ids=["pickle-like", "text", "empty"]
)
def test_checkpoint_garbage_file_rejected(tmp_path, content):
    path = tmp_path / "policy.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    assert f"checkpoint {path} could not be read" in str(error.value)


def test_checkpoint_truncated_file_rejected(tmp_path):
    path = tmp_path / "policy.pt"
    atomic_torch_save({"weights": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    assert f"checkpoint {path} could not be read" in str(error.value)


def test_checkpoint_without_dict_rejected(tmp_path):
    path = tmp_path / "tensor.pt"
    atomic_torch_save(torch.ones(3), path)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    assert "contains a Tensor, not a dict" in str(error.value)


# Non-finite logits -----------------------------------------------------------


class PoisonedAdapter(MDMAdapter):
    """The shipped MDM, except that after ``clean_calls`` calls one batch row gets a ``value`` logit."""

    def __init__(self, inner: MDMAdapter, row: int, value: float, clean_calls: int) -> None:
        super().__init__()
        self.inner, self.row, self.value, self.clean_calls = inner, row, value, clean_calls
        self.tokenizer = inner.tokenizer
        self.mask_token_id, self.pad_token_id = inner.mask_token_id, inner.pad_token_id
        self.eos_token_id, self.max_length = inner.eos_token_id, inner.max_length

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.inner.hidden_size

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def _forward(self, input_ids, attention_mask, output_hidden_states):
        out = self.inner.denoise(input_ids, attention_mask, output_hidden_states)
        if self.nfe > self.clean_calls:
            out.logits[self.row, -1, 7] = self.value  # one logit of the last position suffices
        return out


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_env_non_finite_logits_name_row(value):
    env = make_env(PoisonedAdapter(shipped_adapter(), row=1, value=value, clean_calls=1), batch_size=3)
    td = env.reset()
    td["action"] = td["candidates"] & (torch.arange(L) == 0)
    with pytest.raises(NonFiniteLogitsError) as error:
        env.step(td)
    assert "batch rows [1]" in str(error.value)
    assert "check the model weights" in str(error.value)


def test_env_reset_non_finite_logits_rejected():
    env = make_env(PoisonedAdapter(shipped_adapter(), row=0, value=math.nan, clean_calls=0))
    with pytest.raises(NonFiniteLogitsError) as error:
        env.reset()
    assert "batch rows [0]" in str(error.value)


def test_sampler_non_finite_logits_name_row():
    adapter = PoisonedAdapter(shipped_adapter(), row=1, value=math.nan, clean_calls=2)
    batch = make_source(shipped_adapter())(2)
    rule = HeuristicRule("confidence", response_length=L, steps=4)
    with pytest.raises(NonFiniteLogitsError) as error:
        decode(adapter, batch["prompt_ids"], batch["prompt_mask"], L, rule)
    assert "batch rows [1]" in str(error.value)


# Configs ---------------------------------------------------------------------


def test_config_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError) as error:
        from_dict(MDMTrainConfig, {"stpes": 10})
    assert "'stpes'" in str(error.value)
    assert "did you mean 'steps'" in str(error.value)


def test_config_file_unknown_nested_key_suggests_nearest(tmp_path):
    path = tmp_path / "mdm.yaml"
    path.write_text("model:\n  hiden_size: 64\n")
    with pytest.raises(ConfigError) as error:
        load_config(MDMTrainConfig, path)
    assert "'model.hiden_size'" in str(error.value)
    assert "did you mean 'model.hidden_size'" in str(error.value)


# Invalid actions -------------------------------------------------------------


def test_invalid_actions_name_batch_row():
    env = make_env(block_length=4)
    td = env.reset()
    first = torch.zeros(2, L, dtype=torch.bool)
    first[:, 0] = True
    td = env.step(td.set("action", first))["next"]

    cases = {}
    wrong_shape = torch.zeros(2, L + 1, dtype=torch.bool)
    unmasked = first.clone() | (torch.arange(L) == 1)
    empty = unmasked.clone()
    empty[:, 0] = False
    empty[1] = False
    outside = empty.clone()
    outside[1, 1] = True
    outside[0, 5] = True
    cases["shape"] = (wrong_shape, f"must have shape {(2, L)} (batch_size, response_length), got {(2, L + 1)}")
    cases["already unmasked"] = (unmasked, "batch row 0 selects positions [0] that are already unmasked")
    cases["empty"] = (empty, "batch row 1 selects nothing while 7 positions are still masked")
    cases["outside block"] = (outside, "batch row 0 selects positions [5] that are outside the current block")
    for name, (action, message) in cases.items():
        with pytest.raises(InvalidActionError) as error:
            env.step(td.clone().set("action", action))
        assert message in str(error.value), name
