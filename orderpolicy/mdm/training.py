"""Train the built-in MDM from scratch on gsm-synth with the LLaDA SFT objective.

Shapes: B batch, N = P + L sequence (prompt width P, response length L).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from orderpolicy.batching import TokenBatch, encode_batch
from orderpolicy.checkpoint import atomic_torch_save, load_checkpoint
from orderpolicy.config import save_config
from orderpolicy.mdm.builtin import ModelConfig, build_model
from orderpolicy.mdm.diffusion_loss import diffusion_loss, mask_response
from orderpolicy.mdm.probe import greedy_accuracy, operation_accuracy
from orderpolicy.tasks.gsm_synth import GsmSynthConfig, generate, vocabulary_words
from orderpolicy.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


@dataclass
class MDMTrainConfig:
    """Everything that defines a built-in MDM training run."""

    seed: int = 0  # seeds data generation, masking and initialisation
    task: GsmSynthConfig = field(default_factory=GsmSynthConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt_length: int = 80  # P, prompt width in tokens (left padded)
    response_length: int = 72  # L, response length in tokens (EOS padded)
    train_problems: int = 200_000  # size of the generated training pool
    eval_problems: int = 256  # held-out problems for loss and probes
    steps: int = 4500  # optimiser steps
    batch_size: int = 64  # sequences per step
    lr: float = 1e-3  # peak AdamW learning rate
    warmup_steps: int = 200  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.05  # final learning rate as a share of lr
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm
    eps: float = 1e-3  # lowest masking probability, p = (1 - eps) t + eps
    autocast: str = "bf16"  # bf16 | none; mixed precision for the forward pass
    eval_interval: int = 250  # steps between held-out evaluations and checkpoints
    greedy_eval_problems: int = 64  # problems decoded one token per step at each evaluation
    export_dtype: str = "float16"  # float16 | bfloat16 | float32; weights of the exported model
    init_checkpoint: str | None = None  # checkpoint.pt of an earlier run to start from (same tokenizer)

    def __post_init__(self) -> None:
        if self.autocast not in ("bf16", "none"):
            raise ValueError(f"autocast must be 'bf16' or 'none', got {self.autocast!r}")
        if self.export_dtype not in ("float16", "bfloat16", "float32"):
            raise ValueError(f"export_dtype must be float16, bfloat16 or float32, got {self.export_dtype!r}")
        if self.prompt_length + self.response_length > self.model.max_length:
            raise ValueError(
                f"prompt_length + response_length = {self.prompt_length + self.response_length} "
                f"exceeds model.max_length = {self.model.max_length}"
            )


def _learning_rate(config: MDMTrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def _encode(config: MDMTrainConfig, tokenizer, problems) -> TokenBatch:
    return encode_batch(
        tokenizer,
        [p.question for p in problems],
        [p.answer for p in problems],
        config.prompt_length,
        config.response_length,
        pad_id=tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
    )


def export_model(model, tokenizer, config: MDMTrainConfig, out_dir: Path) -> None:
    """Save a transformers folder (config, safetensors, tokenizer.json) plus the run config."""
    dtype = getattr(torch, config.export_dtype)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        for child in tmp.iterdir():
            child.unlink()
    export = build_model(config.model, tokenizer)
    export.load_state_dict(model.state_dict())
    export.to(dtype).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_config(config, tmp / "orderpolicy_train_config.yaml")
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        out_dir.rename(old)
        tmp.rename(out_dir)
        for child in old.iterdir():
            child.unlink()
        old.rmdir()
    else:
        tmp.rename(out_dir)


def train_mdm(config: MDMTrainConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train, evaluate every ``eval_interval`` steps, checkpoint, export; return final metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    torch.manual_seed(config.seed)

    tokenizer = build_tokenizer(vocabulary_words(config.task))
    train = _encode(config, tokenizer, generate(config.task, "train", config.train_problems, config.seed))
    held_out_problems = generate(config.task, "test", config.eval_problems, config.seed)
    held_out = _encode(config, tokenizer, held_out_problems)
    model = build_model(config.model, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    start_step, history = 0, []

    if config.init_checkpoint and not resume:
        model.load_state_dict(load_checkpoint(config.init_checkpoint)["model"])
        log.info("initialised weights from %s", config.init_checkpoint)

    checkpoint_path = out_dir / "checkpoint.pt"
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_step, history = state["step"], state["history"]
        log.info("resumed from %s at step %d", checkpoint_path, start_step)

    mask_id = tokenizer.mask_token_id
    P, L = config.prompt_length, config.response_length
    use_bf16 = config.autocast == "bf16"
    bar = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps, desc="train_mdm")
    started = time.time()
    for step in bar:
        model.train()
        index = torch.randint(0, train.input_ids.shape[0], (config.batch_size,), generator=generator)
        clean = train.input_ids[index]  # (B, N)
        attention = train.attention_mask[index]  # (B, N)
        noisy, masked, p = mask_response(clean, P, mask_id, generator, config.eps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=noisy, attention_mask=attention).logits  # (B, N, V)
        loss = diffusion_loss(logits, clean, masked, p, L)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")

        done = step + 1
        if done % config.eval_interval == 0 or done == config.steps:
            metrics = _evaluate(model, held_out, tokenizer, config, use_bf16)
            metrics.update(step=done, train_loss=loss.item(), minutes=(time.time() - started) / 60)
            history.append(metrics)
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "step": done,
                "history": history,
            }
            atomic_torch_save(state, checkpoint_path)
            export_model(model, tokenizer, config, out_dir / "model")
    return history[-1] if history else {}


@torch.no_grad()
def _evaluate(model, held_out: TokenBatch, tokenizer, config: MDMTrainConfig, use_bf16: bool) -> dict:
    mask_id = tokenizer.mask_token_id
    model.eval()
    generator = torch.Generator().manual_seed(12345)
    noisy, masked, p = mask_response(held_out.input_ids, config.prompt_length, mask_id, generator, config.eps)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
        logits = model(input_ids=noisy, attention_mask=held_out.attention_mask).logits
    metrics = {"eval_loss": diffusion_loss(logits, held_out.input_ids, masked, p, config.response_length).item()}
    metrics.update(operation_accuracy(model, held_out, tokenizer, mask_id, use_bf16))
    count = min(config.greedy_eval_problems, held_out.input_ids.shape[0])
    subset = TokenBatch(held_out.input_ids[:count], held_out.attention_mask[:count], held_out.prompt_length)
    metrics["greedy_accuracy"] = greedy_accuracy(model, subset, tokenizer, use_bf16)
    return metrics
