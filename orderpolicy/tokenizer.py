"""Word-level tokenizer of the built-in MDM, built with the ``tokenizers`` library.

Every integer is one token and never carries a space, so ``8`` is the same token
in ``5+3=8``, ``>>8`` and ``#### 8``. Words carry their leading space (``" has"``
and ``"has"`` are two tokens), a space before a number or symbol is its own
token, and the decoder concatenates tokens, so ``decode(encode(text)) == text``
for any text made only of known pieces. An unknown piece becomes ``[UNK]``:
:func:`encode_texts` counts them and logs a warning, or raises if asked to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

PAD, MASK, EOS, UNK = "[PAD]", "[MASK]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD, MASK, EOS, UNK)
# A word with an optional leading space, a whole number, a GSM8K marker, one
# whitespace character, or one other symbol. Every character matches some branch.
PIECE_PATTERN = r" ?[A-Za-z]+|\d+|<<|>>|####|\s|[^\sA-Za-z\d]"
SYMBOLS = (" ", "\n", ".", ",", "?", "!", "+", "-", "*", "/", "=", "<<", ">>", "####", "$", "%", ":")


def build_tokenizer(words: Iterable[str], extra_numbers: int = 100) -> PreTrainedTokenizerFast:
    """Build the tokenizer for a task vocabulary, deterministically.

    ``words`` are the task's words and numbers; the numbers ``0 .. extra_numbers``
    are added so that every small integer has a token. Token ids follow a
    sorted order, so the same inputs always give the same ids.
    """
    pieces: set[str] = set(SYMBOLS)
    for word in words:
        if word.isdigit():
            pieces.add(str(int(word)))
        elif word.isalpha():
            pieces.update((word, " " + word))
        else:
            raise ValueError(f"vocabulary entry {word!r} is neither a word nor a whole number")
    pieces.update(str(n) for n in range(extra_numbers + 1))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for piece in sorted(pieces):
        vocab[piece] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        mask_token=MASK,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )


def encode_texts(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], *, strict: bool = False
) -> list[list[int]]:
    """Encode texts without special tokens; count unknown pieces.

    With ``strict=True`` an unknown piece raises ``ValueError`` naming the text
    and the pieces; otherwise they map to ``[UNK]`` and one warning gives the count.
    """
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    unk_id = tokenizer.unk_token_id
    unknown_total = 0
    for text, ids in zip(texts, encoded):
        count = sum(1 for i in ids if i == unk_id)
        if count and strict:
            pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
            missing = sorted({p for p, _ in pieces if tokenizer.convert_tokens_to_ids(p) == unk_id})
            raise ValueError(
                f"text has {count} piece(s) the tokenizer cannot represent: {missing[:10]} "
                f"in {text[:80]!r}; use text from the task vocabulary or pass strict=False "
                "to map them to [UNK]"
            )
        unknown_total += count
    if unknown_total:
        log.warning("mapped %d unknown piece(s) in %d text(s) to %s", unknown_total, len(texts), UNK)
    return encoded
