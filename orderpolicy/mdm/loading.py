"""Load an MDM adapter by name, or pick the adapter from the model's ``config.json``.

Adapter names:

- ``builtin``: the MDM shipped inside the package; takes no model path.
- ``hf-masked-lm``: any ``AutoModelForMaskedLM`` folder whose architecture is
  built into transformers (BERT, ModernBERT, ...).
- ``llada``: LLaDA checkpoints, with the modeling code they ship.
- ``dream``: Dream checkpoints, with the modeling code they ship.
- ``auto``: ``llada`` or ``dream`` when ``model_type`` or ``architectures`` in
  ``config.json`` name them, ``hf-masked-lm`` for a ``*ForMaskedLM``
  architecture, and ``builtin`` when no model is given.

A model is a local folder or a hub name (``org/name``). A hub name is loaded
from the Hugging Face cache, or downloaded when the machine is online.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import torch
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import cached_file

from orderpolicy.mdm.builtin import default_mdm_path
from orderpolicy.mdm.dream import DreamAdapter
from orderpolicy.mdm.hf_masked_lm import HFMaskedLMAdapter
from orderpolicy.mdm.interface import MDMAdapter
from orderpolicy.mdm.llada import LLaDAAdapter

ADAPTER_NAMES = ("auto", "builtin", "hf-masked-lm", "llada", "dream")
DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
# Weight dtype used when the caller passes none: 8B diffusion models are meant for bf16 GPUs.
DEFAULT_DTYPES = {
    "hf-masked-lm": torch.float32,
    "llada": torch.bfloat16,
    "dream": torch.bfloat16,
}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_adapter_name(name: str) -> str:
    """Return ``name`` if it is a known adapter; otherwise raise naming the nearest one."""
    if name in ADAPTER_NAMES:
        return name
    close = difflib.get_close_matches(name, ADAPTER_NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown MDM adapter {name!r}{hint} Valid adapters: {list(ADAPTER_NAMES)}")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Turn a dtype name (``bf16``, ``float32``, ...) into a torch dtype; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def check_model_folder(path: Path) -> None:
    """Raise naming what is missing when ``path`` is not a loadable model folder."""
    if not path.is_dir():
        raise NotADirectoryError(f"model path {path} is a file; pass the folder that contains config.json")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no config.json in model folder {path}; pass a folder saved with save_pretrained "
            "or downloaded from the hub"
        )
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise FileNotFoundError(
            f"no weights in model folder {path}: expected *.safetensors or *.bin files; "
            "the download may be incomplete"
        )


def read_model_config(model: str, local_files_only: bool = False) -> dict:
    """Read ``config.json`` of a local folder or of a hub name."""
    path = Path(model).expanduser()
    if path.exists():
        check_model_folder(path)
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    if not HUB_NAME.match(model):
        raise FileNotFoundError(
            f"model folder not found: {path}; pass an existing folder with config.json and "
            "weights, or a hub name such as GSAI-ML/LLaDA-8B-Instruct"
        )
    try:
        config_file = cached_file(model, "config.json", local_files_only=local_files_only)
    except OSError as error:
        raise _download_error(model, error) from error
    return json.loads(Path(config_file).read_text(encoding="utf-8"))


def _download_error(model: str, error: OSError) -> OSError:
    return OSError(
        f"could not load model {model!r} from the Hugging Face cache or hub ({error}), and no "
        f"local folder of that name exists. Download the weights first, e.g. "
        f"`hf download {model} --local-dir DIR`, and pass the local folder DIR as the model"
    )


def detect_adapter(config: dict, where: str) -> str:
    """Pick the adapter for a model from its ``config.json`` contents."""
    model_type = str(config.get("model_type", "")).lower()
    architectures = [str(name) for name in config.get("architectures") or []]
    names = " ".join([model_type, *architectures]).lower()
    if "llada" in names:
        return "llada"
    if "dream" in names:
        return "dream"
    if any(name.endswith("ForMaskedLM") for name in architectures):
        return "hf-masked-lm"
    raise ValueError(
        f"cannot tell which adapter loads {where} (model_type={model_type!r}, "
        f"architectures={architectures}); pass the adapter explicitly, one of "
        f"{[name for name in ADAPTER_NAMES if name != 'auto']}"
    )


def check_remote_code(config: dict, model: str, adapter: str) -> None:
    """Raise when a model needs its own modeling code and the adapter cannot run it.

    ``hf-masked-lm`` loads only architectures built into transformers. For
    ``llada`` and ``dream`` in a local folder, the modeling files named in
    ``auto_map`` must sit beside ``config.json``.
    """
    auto_map = config.get("auto_map") or {}
    model_type = config.get("model_type")
    if adapter == "hf-masked-lm":
        if model_type not in CONFIG_MAPPING:
            raise ValueError(
                f"model {model} has model_type={model_type!r}, which transformers does not know, "
                f"so it needs its own code (trust_remote_code); use adapter 'llada' or 'dream' if it "
                "is one of those, since hf-masked-lm loads only built-in architectures"
            )
        return
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return
    for reference in auto_map.values():
        reference = reference[0] if isinstance(reference, list) else reference
        module = str(reference).split("--")[-1].rsplit(".", 1)[0]
        if not (folder / f"{module}.py").is_file():
            raise FileNotFoundError(
                f"model folder {folder} lacks {module}.py, the modeling code that config.json's "
                f"auto_map names; copy every .py file of the {adapter} checkpoint into the folder"
            )


ADAPTER_CLASSES: dict[str, type[MDMAdapter]] = {
    "hf-masked-lm": HFMaskedLMAdapter,
    "llada": LLaDAAdapter,
    "dream": DreamAdapter,
}


def load_adapter(
    model: str | Path | None = None,
    adapter: str = "auto",
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    local_files_only: bool = False,
) -> MDMAdapter:
    """Load the MDM at ``model`` behind the adapter named ``adapter``.

    ``model=None`` loads the built-in MDM. ``dtype`` is the weight dtype
    (default float32 for masked LMs, bfloat16 for LLaDA and Dream).
    ``local_files_only`` stops any download of a hub name.

    >>> adapter = load_adapter()                       # doctest: +SKIP
    >>> adapter.mask_token_id, adapter.vocab_size      # doctest: +SKIP
    """
    adapter = check_adapter_name(adapter)
    if model is None:
        if adapter not in ("auto", "builtin", "hf-masked-lm"):
            raise ValueError(f"adapter {adapter!r} needs a model folder or hub name; pass model=PATH")
        model, adapter = str(default_mdm_path()), "hf-masked-lm"
    elif adapter == "builtin":
        raise ValueError(
            f"adapter 'builtin' loads the shipped MDM and takes no model, got model={str(model)!r}; "
            "use adapter 'auto' or 'hf-masked-lm' for a model folder"
        )
    model = str(model)
    config = read_model_config(model, local_files_only=local_files_only)
    if adapter == "auto":
        adapter = detect_adapter(config, model)
    check_remote_code(config, model, adapter)

    weight_dtype = resolve_dtype(dtype) or DEFAULT_DTYPES[adapter]
    try:
        return ADAPTER_CLASSES[adapter].from_pretrained(
            model, device=device, dtype=weight_dtype, local_files_only=local_files_only
        )
    except OSError as error:
        if Path(model).expanduser().is_dir():
            raise OSError(f"could not load model folder {model} with adapter {adapter!r}: {error}") from error
        raise _download_error(model, error) from error
