"""The built-in MDM: a small ModernBERT masked LM trained on gsm-synth.

ModernBERT (transformers' ``ModernBertForMaskedLM``) is bidirectional and uses
rotary positions; here every layer uses full attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transformers import ModernBertConfig, ModernBertForMaskedLM

DEFAULT_MDM_DIR = "mdm-gsm-synth"


@dataclass
class ModelConfig:
    """Size of the built-in ModernBERT denoiser."""

    hidden_size: int = 256  # width of every layer
    num_layers: int = 6  # transformer layers, all with full attention
    num_heads: int = 4  # attention heads per layer
    intermediate_size: int = 512  # GLU inner width of the MLP
    max_length: int = 192  # longest prompt + response, in tokens


def build_model(config: ModelConfig, tokenizer) -> ModernBertForMaskedLM:
    """Create a randomly initialised ModernBERT masked LM for ``tokenizer``."""
    if config.hidden_size % config.num_heads:
        raise ValueError(
            f"hidden_size={config.hidden_size} must be divisible by num_heads={config.num_heads}"
        )
    hf_config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        max_position_embeddings=config.max_length,
        layer_types=["full_attention"] * config.num_layers,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        cls_token_id=None,
        sep_token_id=None,
        attn_implementation="sdpa",
    )
    return ModernBertForMaskedLM(hf_config)


def default_mdm_path() -> Path:
    """Return the folder of the MDM shipped inside the package."""
    path = Path(str(resources.files("orderpolicy") / "assets" / DEFAULT_MDM_DIR))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped MDM is missing at {path}; reinstall orderpolicy or train one with "
            "`python scripts/train_mdm.py` and pass its folder with --model"
        )
    return path
