"""MDM adapters on tiny random models: ids, shapes, NFE, padding, Dream's shift, and loading."""

from __future__ import annotations

import json

import pytest
import torch

from orderpolicy.batching import encode_prompts
from orderpolicy.mdm import loading
from orderpolicy.mdm.dream import DreamAdapter, dream_attention_inputs, shift_right
from orderpolicy.mdm.hf_masked_lm import HFMaskedLMAdapter
from orderpolicy.mdm.llada import LLaDAAdapter
from orderpolicy.mdm.loading import check_adapter_name, detect_adapter, load_adapter, resolve_dtype
from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate
from standin_models import (
    DreamStandin,
    LLaDAStandin,
    NextTokenOracle,
    dream_tokenizer,
    llada_tokenizer,
    tiny_bert,
    tiny_modernbert,
    word_tokenizer,
)

RESPONSE_LENGTH = 6


def _masked_batch(adapter, prompts: list[str]):
    """Left-padded prompts followed by a fully masked response, as decoding starts."""
    lengths = [len(row) for row in adapter.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    prompt_length = max(lengths)  # the longest prompt gets no padding
    ids, mask = encode_prompts(adapter.tokenizer, prompts, prompt_length, pad_id=adapter.pad_token_id)
    response = torch.full((len(prompts), RESPONSE_LENGTH), adapter.mask_token_id)
    input_ids = torch.cat([ids, response], dim=1)  # (B, P + L)
    attention_mask = torch.cat([mask, torch.ones_like(response)], dim=1)
    return input_ids, attention_mask


def _encode(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, N)


def _prompts() -> list[str]:
    problems = generate(GsmSynthConfig(), "train", 3, seed=1)
    # Three different lengths, so every row but the longest is padded.
    return [problems[0].question, "Tom has 5 apples.", problems[1].question + " " + problems[2].question]


def _masked_lm(kind: str):
    tokenizer = word_tokenizer()
    model = tiny_bert(tokenizer) if kind == "bert" else tiny_modernbert(tokenizer)
    return HFMaskedLMAdapter(model, tokenizer)


def _make_adapter(kind: str):
    if kind in ("bert", "modernbert"):
        return _masked_lm(kind)
    if kind == "llada":
        tokenizer = llada_tokenizer()
        return LLaDAAdapter(LLaDAStandin(tokenizer), tokenizer)
    tokenizer = dream_tokenizer()
    return DreamAdapter(DreamStandin(tokenizer), tokenizer)


ALL_KINDS = ["bert", "modernbert", "llada", "dream"]


# Shapes, NFE and frozen weights, for every adapter.


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_denoise_shapes_and_nfe(kind):
    adapter = _make_adapter(kind)
    input_ids, attention_mask = _masked_batch(adapter, _prompts())
    assert adapter.nfe == 0

    out = adapter.denoise(input_ids, attention_mask, output_hidden_states=True)
    assert adapter.nfe == 1
    assert out.logits.shape == (*input_ids.shape, adapter.vocab_size)
    assert out.logits.dtype == torch.float32
    assert out.hidden_states.shape == (*input_ids.shape, adapter.hidden_size)

    out = adapter.denoise(input_ids, attention_mask)
    assert adapter.nfe == 2
    assert out.hidden_states is None


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_adapter_freezes_model(kind):
    adapter = _make_adapter(kind)
    assert not adapter.model.training
    assert not any(parameter.requires_grad for parameter in adapter.model.parameters())


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_padded_batch_matches_single_prompts(kind):
    adapter = _make_adapter(kind)
    prompts = _prompts()
    input_ids, attention_mask = _masked_batch(adapter, prompts)
    batched = adapter.denoise(input_ids, attention_mask).logits  # (B, N, V)
    assert (attention_mask == 0).any(dim=1).sum() == len(prompts) - 1

    for row in range(len(prompts)):
        real = attention_mask[row].bool()
        alone = adapter.denoise(input_ids[row : row + 1, real], attention_mask[row : row + 1, real]).logits[0]
        assert torch.equal(batched[row, real].argmax(-1), alone.argmax(-1)), f"row {row} differs"
        assert torch.allclose(batched[row, real], alone, atol=1e-4), f"row {row} logits differ"


# Special token ids come from the tokenizer.


def test_masked_lm_ids_from_tokenizer():
    adapter = _masked_lm("modernbert")
    tokenizer = adapter.tokenizer
    assert adapter.mask_token_id == tokenizer.mask_token_id
    assert adapter.pad_token_id == tokenizer.pad_token_id
    assert adapter.eos_token_id == tokenizer.eos_token_id
    assert len({adapter.mask_token_id, adapter.pad_token_id, adapter.eos_token_id}) == 3


def test_llada_ids_from_tokenizer():
    tokenizer = llada_tokenizer()
    adapter = LLaDAAdapter(LLaDAStandin(tokenizer), tokenizer)
    # The word tokenizer also sets mask_token "[MASK]"; LLaDA's named token wins.
    assert adapter.mask_token_id == tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
    assert adapter.mask_token_id != tokenizer.mask_token_id
    assert adapter.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert adapter.end_of_turn_token_id == tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert adapter.pad_token_id == tokenizer.pad_token_id
    assert adapter.vocab_size == adapter.model.config.embedding_size
    assert adapter.vocab_size > len(tokenizer)
    assert adapter.max_length == adapter.model.config.max_sequence_length


def test_llada_mask_falls_back_to_mask_token():
    tokenizer = word_tokenizer()  # no <|mdm_mask|> in the vocabulary
    adapter = LLaDAAdapter(LLaDAStandin(tokenizer), tokenizer)
    assert adapter.mask_token_id == tokenizer.mask_token_id
    assert adapter.end_of_turn_token_id is None


def test_llada_without_mask_token_raises():
    tokenizer = word_tokenizer()
    tokenizer.mask_token = None
    with pytest.raises(ValueError, match="<\\|mdm_mask\\|>"):
        LLaDAAdapter(LLaDAStandin(tokenizer), tokenizer)


def test_llada_pad_equal_to_mask_raises():
    tokenizer = llada_tokenizer()
    tokenizer.pad_token = "<|mdm_mask|>"
    with pytest.raises(ValueError, match="equals the mask id"):
        LLaDAAdapter(LLaDAStandin(tokenizer), tokenizer)


def test_llada_passes_attention_mask_unchanged():
    adapter = _make_adapter("llada")
    input_ids, attention_mask = _masked_batch(adapter, _prompts())
    adapter.denoise(input_ids, attention_mask, output_hidden_states=True)
    call = adapter.model.calls[-1]
    assert torch.equal(call["attention_mask"], attention_mask)
    assert call["output_hidden_states"] is True


def test_dream_ids_from_tokenizer():
    tokenizer = dream_tokenizer()
    adapter = DreamAdapter(DreamStandin(tokenizer), tokenizer)
    assert adapter.mask_token_id == tokenizer.convert_tokens_to_ids("<|mask|>")
    assert adapter.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert adapter.pad_token_id == adapter.eos_token_id
    assert adapter.end_of_turn_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_dream_mask_from_generation_config():
    tokenizer = dream_tokenizer()
    mask_id = tokenizer.convert_tokens_to_ids("<|mask|>")
    tokenizer.mask_token = None
    adapter = DreamAdapter(DreamStandin(tokenizer, mask_token_id=mask_id), tokenizer)
    assert adapter.mask_token_id == mask_id


def test_dream_without_mask_raises():
    tokenizer = dream_tokenizer()
    tokenizer.mask_token = None
    with pytest.raises(ValueError, match="no mask token"):
        DreamAdapter(DreamStandin(tokenizer), tokenizer)


# Dream's logits shift.


def test_dream_shift_recovers_known_tokens():
    tokenizer = dream_tokenizer()
    clean = _encode(tokenizer, "Tom has 5 apples. Then 5+3=<<5+3=8>>8 apples.")  # (1, N)
    mask_id = tokenizer.mask_token_id
    noisy = clean.clone()
    noisy[:, 3:] = mask_id  # (1, N)
    adapter = DreamAdapter(NextTokenOracle(clean, vocab_size=len(tokenizer)), tokenizer)

    out = adapter.denoise(noisy, torch.ones_like(noisy), output_hidden_states=True)
    predicted = out.logits.argmax(-1)  # (1, N)
    # The oracle's raw logits at i name token i + 1, so after the shift index i names token i.
    assert torch.equal(predicted[:, 1:], clean[:, 1:])
    assert predicted[0, 0] == clean[0, 1]  # position 0 keeps its own logits
    positions = out.hidden_states[0, :, 0]  # (N,) the raw position each hidden state came from
    assert positions[0] == 0
    assert torch.equal(positions[1:], torch.arange(clean.shape[1] - 1, dtype=torch.float32))


def test_shift_right_matches_row_loop():
    torch.manual_seed(0)
    values = torch.randn(3, 6, 4)  # (B, N, V)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    shifted = shift_right(values, attention_mask)
    for row in range(3):
        first_real = int(attention_mask[row].argmax())
        for position in range(6):
            source = position if position <= first_real else position - 1
            assert torch.equal(shifted[row, position], values[row, source]), (row, position)


def test_dream_shift_with_left_padding():
    tokenizer = dream_tokenizer()
    clean = _encode(tokenizer, "Tom has 5 apples. Then 5+3=<<5+3=8>>8 apples.")  # (1, N)
    padding = torch.full((1, 4), tokenizer.pad_token_id)
    padded = torch.cat([padding, clean], dim=1)  # (1, 4 + N)
    attention_mask = torch.cat([torch.zeros_like(padding), torch.ones_like(clean)], dim=1)
    adapter = DreamAdapter(NextTokenOracle(padded, vocab_size=len(tokenizer)), tokenizer)

    predicted = adapter.denoise(padded, attention_mask).logits.argmax(-1)  # (1, 4 + N)
    assert torch.equal(predicted[:, 5:], clean[:, 1:])
    assert predicted[0, 4] == clean[0, 1]  # the first real token keeps its own logits


def test_dream_attention_inputs_without_padding():
    mask_argument, position_ids = dream_attention_inputs(torch.ones(2, 5, dtype=torch.long))
    assert mask_argument == "full"
    assert position_ids is None


def test_dream_attention_inputs_with_padding():
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    mask_argument, position_ids = dream_attention_inputs(attention_mask)
    assert mask_argument.shape == (2, 1, 5, 5)
    assert mask_argument.dtype == torch.bool
    for query in range(5):
        assert torch.equal(mask_argument[:, 0, query], attention_mask.bool())
    assert position_ids[0, 2:].tolist() == [0, 1, 2]
    assert position_ids[1].tolist() == [0, 1, 2, 3, 4]


def test_denoise_rejects_too_long_sequence():
    adapter = _make_adapter("llada")
    too_long = adapter.max_length + 1
    ids = torch.full((1, too_long), adapter.mask_token_id)
    with pytest.raises(ValueError, match="exceeds the model's maximum"):
        adapter.denoise(ids, torch.ones_like(ids))


# Loading by name and from folders.


def _save_bert(folder):
    tokenizer = word_tokenizer()
    model = tiny_bert(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_unknown_adapter_name_suggests_nearest():
    with pytest.raises(ValueError, match="did you mean 'llada'") as error:
        check_adapter_name("lada")
    assert "hf-masked-lm" in str(error.value)


def test_load_adapter_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown MDM adapter 'dreem'"):
        load_adapter(str(tmp_path), adapter="dreem")


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_adapter(str(tmp_path / "no-such-model"))


def test_load_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_adapter(str(tmp_path))


def test_load_folder_without_weights(tmp_path):
    _save_bert(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_adapter(str(tmp_path))


def test_auto_detects_saved_bert(tmp_path):
    model, tokenizer = _save_bert(tmp_path)
    adapter = load_adapter(str(tmp_path))
    assert isinstance(adapter, HFMaskedLMAdapter)
    assert adapter.mask_token_id == tokenizer.mask_token_id
    assert next(adapter.model.parameters()).dtype == torch.float32

    direct = HFMaskedLMAdapter(model, tokenizer)
    input_ids, attention_mask = _masked_batch(direct, _prompts())
    loaded = adapter.denoise(input_ids, attention_mask).logits
    assert torch.allclose(loaded, direct.denoise(input_ids, attention_mask).logits, atol=1e-5)


def test_load_with_dtype_name(tmp_path):
    _save_bert(tmp_path)
    adapter = load_adapter(str(tmp_path), adapter="hf-masked-lm", dtype="bf16")
    assert next(adapter.model.parameters()).dtype == torch.bfloat16


def test_none_loads_builtin_path(tmp_path, monkeypatch):
    _save_bert(tmp_path)
    monkeypatch.setattr(loading, "default_mdm_path", lambda: tmp_path)
    adapter = load_adapter(None)
    assert isinstance(adapter, HFMaskedLMAdapter)
    assert adapter.vocab_size == adapter.model.config.vocab_size


def test_builtin_adapter_rejects_model_path(tmp_path):
    with pytest.raises(ValueError, match="takes no model"):
        load_adapter(str(tmp_path), adapter="builtin")


def test_llada_adapter_needs_model():
    with pytest.raises(ValueError, match="needs a model folder"):
        load_adapter(None, adapter="llada")


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"model_type": "llada", "architectures": ["LLaDAModelLM"]}, "llada"),
        ({"model_type": "Dream", "architectures": ["DreamModel"]}, "dream"),
        ({"model_type": "modernbert", "architectures": ["ModernBertForMaskedLM"]}, "hf-masked-lm"),
    ],
)
def test_detect_adapter_from_config(config, expected):
    assert detect_adapter(config, "test config") == expected


def test_detect_adapter_rejects_causal_lm():
    with pytest.raises(ValueError, match="pass the adapter explicitly"):
        detect_adapter({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "gpt2 folder")


def _fake_remote_code_folder(folder, model_type: str, module: str):
    config = {
        "model_type": model_type,
        "architectures": ["LLaDAModelLM"],
        "auto_map": {"AutoConfig": f"{module}.Config", "AutoModel": f"{module}.Model"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")


def test_masked_lm_adapter_rejects_remote_code_model(tmp_path):
    _fake_remote_code_folder(tmp_path, "llada", "modeling_llada")
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_adapter(str(tmp_path), adapter="hf-masked-lm")


def test_llada_folder_without_modeling_code(tmp_path):
    _fake_remote_code_folder(tmp_path, "llada", "modeling_llada")
    with pytest.raises(FileNotFoundError, match="lacks modeling_llada.py"):
        load_adapter(str(tmp_path))


def test_hub_name_offline_says_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="hf download GSAI-ML/LLaDA-8B-Instruct") as error:
        load_adapter("GSAI-ML/LLaDA-8B-Instruct", local_files_only=True)
    assert "local folder" in str(error.value)


def test_resolve_dtype_names():
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype(None) is None
    with pytest.raises(ValueError, match="unknown dtype 'bf61'"):
        resolve_dtype("bf61")
