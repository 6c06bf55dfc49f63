"""Adapter for any transformers masked LM, the built-in MDM included.

Shapes: B batch, N sequence length, V vocabulary, H hidden size.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

from orderpolicy.mdm.interface import DenoiserOutput, MDMAdapter


def _required_id(tokenizer, name: str) -> int:
    token_id = getattr(tokenizer, f"{name}_token_id", None)
    if token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no {name} token; "
            f"an MDM needs one (set tokenizer.{name}_token)"
        )
    return int(token_id)


def vocab_token_id(tokenizer, token: str) -> int | None:
    """Return the id of ``token`` if the tokenizer's vocabulary contains it, else None.

    ``convert_tokens_to_ids`` maps an unknown token to the UNK id (or None), so
    a returned UNK id means absent unless ``token`` is the UNK token itself.
    """
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None:
        return None
    if token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
        return None
    return int(token_id)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Put ``model`` in eval mode and stop gradients to its parameters."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Number the real tokens of each row 0, 1, 2, ... and give padding position 0.

    With left padding this gives every row the positions it would have alone,
    which models with learned absolute positions (BERT) need in order to
    predict the same tokens in a padded batch as for one prompt.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, N)


def check_loading_info(info: dict, path: str | Path) -> None:
    """Raise ``ValueError`` when ``from_pretrained`` reports missing or reshaped weights."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(
        f"{key}: file {tuple(found)}, model {tuple(expected)}"
        for key, found, expected in info.get("mismatched_keys") or ()
    )
    if missing or mismatched:
        raise ValueError(
            f"the weights of model {path} do not match its config.json: {len(missing)} missing "
            f"({missing[:5]}), {len(mismatched)} with another shape ({mismatched[:5]}); the weights "
            "come from another model or an incomplete export, so pass the folder they were saved with"
        )


class HFMaskedLMAdapter(MDMAdapter):
    """A bidirectional ``AutoModelForMaskedLM`` used as a denoiser.

    >>> adapter = HFMaskedLMAdapter.from_pretrained(default_mdm_path())  # doctest: +SKIP
    >>> out = adapter.denoise(ids, attention_mask)                        # doctest: +SKIP
    >>> out.logits.shape                                                  # (B, N, V)
    """

    def __init__(self, model: PreTrainedModel, tokenizer, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.mask_token_id = _required_id(tokenizer, "mask")
        self.pad_token_id = _required_id(tokenizer, "pad")
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if eos is None:
            raise ValueError("tokenizer has neither an EOS nor a SEP token to pad responses with")
        self.eos_token_id = int(eos)
        self.max_length = int(getattr(model.config, "max_position_embeddings", 512))
        self.autocast_dtype = autocast_dtype
        # Models without a position_ids argument get none, and then rely on
        # relative positions (rotary) to be unaffected by left padding.
        self._accepts_position_ids = "position_ids" in inspect.signature(model.forward).parameters

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        local_files_only: bool = False,
        **kwargs,
    ) -> "HFMaskedLMAdapter":
        """Load model and tokenizer from a folder or hub name; ``dtype`` is the weight dtype.

        Raises ``ValueError`` when the weights file is unreadable, or when it lacks
        weights of the architecture in ``config.json`` or stores them with other
        shapes, where transformers would initialise them randomly.
        """
        try:
            model, info = AutoModelForMaskedLM.from_pretrained(
                str(path),
                dtype=dtype,
                local_files_only=local_files_only,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
        except SafetensorError as error:
            raise ValueError(
                f"could not read the weights of model {path} ({error}); the file may be truncated or "
                "not a safetensors file, so download or export the model again"
            ) from error
        check_loading_info(info, path)
        model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local_files_only)
        return cls(model, tokenizer, **kwargs)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, input_ids, attention_mask, output_hidden_states):
        enabled = self.autocast_dtype is not None
        extra = {}
        if self._accepts_position_ids:
            extra["position_ids"] = position_ids_from_mask(attention_mask)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled):
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=output_hidden_states,
                **extra,
            )
        hidden = out.hidden_states[-1].float() if output_hidden_states else None
        return DenoiserOutput(logits=out.logits, hidden_states=hidden)
