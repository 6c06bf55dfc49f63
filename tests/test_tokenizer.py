"""The word-level tokenizer of the built-in MDM on real gsm-synth text."""

from __future__ import annotations

import logging

import pytest
from transformers import AutoTokenizer

from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate, vocabulary_words
from orderpolicy.tokenizer import EOS, MASK, PAD, UNK, build_tokenizer, encode_texts


@pytest.fixture(scope="module")
def config() -> GsmSynthConfig:
    return GsmSynthConfig()


@pytest.fixture(scope="module")
def tokenizer(config):
    return build_tokenizer(vocabulary_words(config))


@pytest.fixture(scope="module")
def texts(config) -> list[str]:
    problems = generate(config, "train", 300, seed=0) + generate(config, "test", 100, seed=0)
    return [p.question for p in problems] + [p.answer for p in problems]


def test_text_round_trip(tokenizer, texts):
    encoded = encode_texts(tokenizer, texts, strict=True)
    for text, ids in zip(texts, encoded):
        assert tokenizer.decode(ids) == text


def test_id_round_trip(tokenizer, texts):
    for ids in encode_texts(tokenizer, texts, strict=True):
        assert encode_texts(tokenizer, [tokenizer.decode(ids)], strict=True)[0] == ids


def test_generated_text_has_no_unknown_pieces(tokenizer, texts):
    unk_id = tokenizer.unk_token_id
    for ids in encode_texts(tokenizer, texts):
        assert unk_id not in ids


def test_numbers_are_single_tokens(tokenizer):
    for number in ("0", "8", "40", "100"):
        assert len(tokenizer(number, add_special_tokens=False)["input_ids"]) == 1
    [ids] = encode_texts(tokenizer, ["5+3=<<5+3=8>>8\n#### 8"], strict=True)
    eight = tokenizer.convert_tokens_to_ids("8")
    assert ids.count(eight) == 3


def test_special_tokens_distinct(tokenizer):
    ids = [tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id]
    assert len(set(ids)) == 4
    assert tokenizer.convert_ids_to_tokens(ids) == [PAD, MASK, EOS, UNK]


def test_build_is_deterministic(config):
    words = vocabulary_words(config)
    first = build_tokenizer(words)
    second = build_tokenizer(words)
    shuffled = build_tokenizer(list(reversed(words)))
    assert first.get_vocab() == second.get_vocab()
    assert first.get_vocab() == shuffled.get_vocab()


def test_strict_unknown_piece_names_it(tokenizer):
    with pytest.raises(ValueError, match="zebra"):
        encode_texts(tokenizer, ["Tom has 3 zebra."], strict=True)
    with pytest.raises(ValueError, match="é"):
        encode_texts(tokenizer, ["Tom has 3 apples é"], strict=True)


def test_unknown_pieces_map_to_unk_with_warning(tokenizer, caplog):
    texts = ["Tom has 3 zebra.", "Ann has 2 apples é ü."]
    with caplog.at_level(logging.WARNING, logger="orderpolicy.tokenizer"):
        encoded = encode_texts(tokenizer, texts)
    unk_id = tokenizer.unk_token_id
    assert encoded[0].count(unk_id) == 1
    assert encoded[1].count(unk_id) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "3 unknown piece(s) in 2 text(s)" in warnings[0].getMessage()


def test_known_text_logs_no_warning(tokenizer, texts, caplog):
    with caplog.at_level(logging.WARNING, logger="orderpolicy.tokenizer"):
        encode_texts(tokenizer, texts[:20])
    assert not caplog.records


def test_invalid_vocabulary_entry_rejected():
    with pytest.raises(ValueError, match="'a-b'"):
        build_tokenizer(["apples", "a-b"])


def test_save_and_reload(tokenizer, texts, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.mask_token_id == tokenizer.mask_token_id
    assert reloaded.pad_token_id == tokenizer.pad_token_id
    assert reloaded.eos_token_id == tokenizer.eos_token_id
    for text in texts[:50]:
        ids = reloaded(text, add_special_tokens=False)["input_ids"]
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
        assert reloaded.decode(ids) == text
