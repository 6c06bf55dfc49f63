"""Masked-diffusion decoding as a batched torchrl environment.

State: prompt + response token ids, which response positions are still masked,
step counters, and the denoiser's statistics for the current state. Action: a
boolean unmask set over the response. One denoiser call per step (one NFE),
made when the state is entered, so its output serves both the policy and the
reward of the next action.

Modes. ``sample``: chosen positions take the denoiser's token (argmax, or a
draw at ``temperature``); ``teacher``: they take the reference token, and the
reward is the log-probability the denoiser gave the reference there (the
likelihood term of the order ELBO).

Episode end. Rows finish at different steps under adaptive rules. A finished
row is marked ``finished``, must take empty actions and earns no reward; ``done``
turns true for all rows together when the last row finishes, so a torchrl
rollout runs until the whole batch is decoded. A row that reaches ``max_steps``
has everything still masked unmasked in that step (``action_taken`` records it).

Shapes: B batch, P prompt width, L response length, N = P + L, H hidden size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from orderpolicy.decoding.rules import block_candidates, num_blocks
from orderpolicy.decoding.stats import draw_tokens, token_stats
from orderpolicy.mdm.interface import MDMAdapter

MODES = ("sample", "teacher")
INVALID_ACTION_MODES = ("raise", "repair")


class InvalidActionError(ValueError):
    """An action that the decoding environment cannot apply."""


class MDMDecodingEnv(EnvBase):
    """Decode B prompts with any :class:`MDMAdapter`, one unmask set per step.

    >>> env = MDMDecodingEnv(adapter, source, batch_size=8, mode="sample")   # doctest: +SKIP
    >>> td = env.rollout(72, HeuristicPolicy(HeuristicRule("confidence", 72, steps=4)))
    >>> td["next", "nfe"][:, -1]     # (B, 1) denoiser calls per row, equal to its steps

    ``source`` provides prompts when ``reset`` gets none: a callable
    ``source(batch_size, generator) -> TensorDict`` with ``prompt_ids`` (B, P),
    ``prompt_mask`` (B, P) and optionally ``reference`` (B, L) and ``target`` (B, 1).
    A ``reset`` tensordict that carries those keys overrides the source.
    """

    batch_locked = True

    def __init__(
        self,
        adapter: MDMAdapter,
        source: Callable[[int, torch.Generator], TensorDictBase],
        *,
        batch_size: int,
        prompt_length: int,
        response_length: int,
        mode: str = "sample",
        max_steps: int | None = None,
        block_length: int | None = None,
        temperature: float = 0.0,
        step_cost: float = 0.0,
        task_reward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        return_hidden: bool = False,
        invalid_action: str = "raise",
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(f"invalid_action must be one of {INVALID_ACTION_MODES}, got {invalid_action!r}")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0 takes the argmax), got {temperature}")
        if prompt_length + response_length > adapter.max_length:
            raise ValueError(
                f"prompt_length + response_length = {prompt_length + response_length} exceeds the model's "
                f"max_length {adapter.max_length}; shorten one of them"
            )
        num_blocks(response_length, block_length)
        max_steps = response_length if max_steps is None else max_steps
        if not 1 <= max_steps <= response_length:
            raise ValueError(f"max_steps must lie in [1, {response_length}], got {max_steps}")
        super().__init__(device=adapter.device, batch_size=torch.Size([batch_size]))
        self.adapter = adapter
        self.source = source
        self.P, self.L = prompt_length, response_length
        self.mode = mode
        self.max_steps = max_steps
        self.block_length = block_length
        self.temperature = temperature
        self.step_cost = step_cost
        self.task_reward = task_reward
        self.return_hidden = return_hidden
        self.invalid_action = invalid_action
        self.rng = torch.Generator(device=self.device)
        self._make_specs()
        self.set_seed(seed)

    # Specs --------------------------------------------------------------------

    def _make_specs(self) -> None:
        B, P, L, N = self.batch_size[0], self.P, self.L, self.P + self.L
        V = self.adapter.vocab_size
        shape = self.batch_size

        def tokens(width: int) -> Bounded:
            return Bounded(low=0, high=V - 1, shape=(B, width), dtype=torch.long, device=self.device)

        def counter() -> Unbounded:
            return Unbounded(shape=(B, 1), dtype=torch.long, device=self.device)

        def per_position(dtype=torch.float32) -> Unbounded:
            return Unbounded(shape=(B, L), dtype=dtype, device=self.device)

        def flags(width: int) -> Binary:
            return Binary(n=width, shape=(B, width), dtype=torch.bool, device=self.device)

        observation = Composite(
            tokens=tokens(N),  # current prompt + response ids, masked positions hold the mask id
            attention_mask=Bounded(low=0, high=1, shape=(B, N), dtype=torch.long, device=self.device),
            reference=tokens(L),  # reference response (teacher mode); the mask id otherwise
            target=Unbounded(shape=(B, 1), dtype=torch.float64, device=self.device),  # final answer, NaN if none
            masked=flags(L),
            candidates=flags(L),  # masked positions of the current block
            finished=flags(1),
            step=counter(),
            block_step=counter(),
            nfe=counter(),
            unmask_step=Unbounded(shape=(B, L), dtype=torch.long, device=self.device),
            action_taken=flags(L),  # last applied set, after max_steps forcing
            predicted=per_position(torch.long),  # argmax token of the current state
            draw=per_position(torch.long),  # token a position takes if unmasked now
            logp_pred=per_position(),
            margin=per_position(),
            entropy=per_position(),
            logp_ref=per_position(),  # log p(reference token), teacher mode; 0 otherwise
            shape=shape,
            device=self.device,
        )
        if self.return_hidden:
            observation["hidden"] = Unbounded(shape=(B, L, self.adapter.hidden_size), device=self.device)
        self.observation_spec = observation
        self.action_spec = flags(L)
        self.reward_spec = Composite(
            reward=Unbounded(shape=(B, 1), device=self.device),
            reward_likelihood=Unbounded(shape=(B, 1), device=self.device),
            reward_task=Unbounded(shape=(B, 1), device=self.device),
            reward_step_cost=Unbounded(shape=(B, 1), device=self.device),
            shape=shape,
            device=self.device,
        )
        self.done_spec = Composite(
            done=Categorical(2, shape=(B, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, shape=(B, 1), dtype=torch.bool, device=self.device),
            shape=shape,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        self.rng.manual_seed(0 if seed is None else int(seed))

    # Denoiser -----------------------------------------------------------------

    @torch.no_grad()
    def _observe(self, tokens: torch.Tensor, attention_mask: torch.Tensor, reference: torch.Tensor) -> dict:
        """Call the denoiser once on the state and return its per-position statistics."""
        out = self.adapter.denoise(tokens, attention_mask, output_hidden_states=self.return_hidden)
        logits = out.logits[:, self.P :]  # (B, L, V)
        need_logp = self.temperature > 0 or self.mode == "teacher"
        stats = token_stats(logits, keep_logp=need_logp)
        draw = draw_tokens(stats.logp, stats.predicted, self.temperature, self.rng) if self.temperature > 0 else stats.predicted
        if self.mode == "teacher":
            logp_ref = stats.logp.gather(-1, reference.unsqueeze(-1)).squeeze(-1)  # (B, L)
        else:
            logp_ref = torch.zeros_like(stats.logp_pred)
        fields = dict(
            predicted=stats.predicted,
            draw=draw,
            logp_pred=stats.logp_pred,
            margin=stats.margin,
            entropy=stats.entropy,
            logp_ref=logp_ref,
        )
        if self.return_hidden:
            fields["hidden"] = out.hidden_states[:, self.P :].float()  # (B, L, H)
        return {key: value.clone() for key, value in fields.items()}

    def _blank_observation(self) -> dict:
        """Statistics for a fully decoded batch, where no denoiser call is made."""
        B, L = self.batch_size[0], self.L
        zeros = torch.zeros(B, L, device=self.device)
        fields = dict(
            predicted=torch.zeros(B, L, dtype=torch.long, device=self.device),
            draw=torch.zeros(B, L, dtype=torch.long, device=self.device),
            logp_pred=zeros,
            margin=zeros.clone(),
            entropy=zeros.clone(),
            logp_ref=zeros.clone(),
        )
        if self.return_hidden:
            fields["hidden"] = torch.zeros(B, L, self.adapter.hidden_size, device=self.device)
        return fields

    # Reset and step -----------------------------------------------------------

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        B, P, L = self.batch_size[0], self.P, self.L
        if tensordict is not None and "prompt_ids" in tensordict.keys():
            problems = tensordict
        else:
            problems = self.source(B, self.rng)
        prompt_ids = problems["prompt_ids"].to(self.device)
        if prompt_ids.shape != (B, P):
            raise ValueError(
                f"prompt_ids must have shape {(B, P)} (batch_size, prompt_length), got {tuple(prompt_ids.shape)}"
            )
        mask_id = self.adapter.mask_token_id
        if "reference" in problems.keys():
            reference = problems["reference"].to(self.device)
            self._check_reference(reference)
        elif self.mode == "teacher":
            raise ValueError("teacher mode needs a 'reference' (B, L) from the prompt source or the reset tensordict")
        else:
            reference = torch.full((B, L), mask_id, dtype=torch.long, device=self.device)
        if "target" in problems.keys():
            target = problems["target"].to(self.device, torch.float64).reshape(B, 1)
        else:
            target = torch.full((B, 1), float("nan"), dtype=torch.float64, device=self.device)

        tokens = torch.cat([prompt_ids, torch.full((B, L), mask_id, dtype=torch.long, device=self.device)], dim=1)
        attention_mask = torch.cat(
            [problems["prompt_mask"].to(self.device).long(), torch.ones(B, L, dtype=torch.long, device=self.device)],
            dim=1,
        )
        masked = torch.ones(B, L, dtype=torch.bool, device=self.device)
        zeros = torch.zeros(B, 1, dtype=torch.long, device=self.device)
        false = torch.zeros(B, 1, dtype=torch.bool, device=self.device)
        state = dict(
            tokens=tokens,
            attention_mask=attention_mask,
            reference=reference,
            target=target,
            masked=masked,
            candidates=block_candidates(masked, self.block_length),
            finished=false.clone(),
            step=zeros.clone(),
            block_step=zeros.clone(),
            nfe=torch.ones_like(zeros),
            unmask_step=torch.full((B, L), -1, dtype=torch.long, device=self.device),
            action_taken=torch.zeros(B, L, dtype=torch.bool, device=self.device),
            done=false.clone(),
            terminated=false.clone(),
        )
        state.update(self._observe(tokens, attention_mask, reference))
        return TensorDict(state, batch_size=self.batch_size, device=self.device)

    def _check_reference(self, reference: torch.Tensor) -> None:
        B, L, V = self.batch_size[0], self.L, self.adapter.vocab_size
        if reference.shape != (B, L):
            raise ValueError(
                f"reference must have shape {(B, L)} (batch_size, response_length), got {tuple(reference.shape)}"
            )
        outside = (reference < 0) | (reference >= V)  # (B, L)
        if outside.any():
            row = int(outside.any(dim=1).nonzero()[0])
            raise ValueError(
                f"reference in batch row {row} contains token ids {reference[row][outside[row]].tolist()} outside "
                f"the vocabulary [0, {V}); encode references with the model's tokenizer"
            )

    def _check_action(self, action: torch.Tensor, td: TensorDictBase) -> torch.Tensor:
        B, L = self.batch_size[0], self.L
        if action.shape != (B, L):
            raise InvalidActionError(
                f"action must have shape {(B, L)} (batch_size, response_length), got {tuple(action.shape)}"
            )
        action = action.bool()
        candidates = td["candidates"] & ~td["finished"]  # (B, L)
        active = ~td["finished"].squeeze(-1)  # (B,)
        if self.invalid_action == "repair":
            action = action & candidates
            empty = active & ~action.any(dim=1)
            best = td["logp_pred"].masked_fill(~candidates, float("-inf")).argmax(dim=1)  # (B,)
            action[empty.nonzero().flatten(), best[empty]] = True
            return action
        outside = action & ~candidates  # (B, L)
        if outside.any():
            row = int(outside.any(dim=1).nonzero()[0])
            unmasked = (outside[row] & ~td["masked"][row]).nonzero().flatten().tolist()
            other_block = (outside[row] & td["masked"][row]).nonzero().flatten().tolist()
            reasons = [f"positions {unmasked} that are already unmasked"] if unmasked else []
            reasons += [f"positions {other_block} that are outside the current block"] if other_block else []
            raise InvalidActionError(
                f"action in batch row {row} selects {' and '.join(reasons)}; "
                "select only positions where 'candidates' is True"
            )
        empty = active & ~action.any(dim=1)
        if empty.any():
            row = int(empty.nonzero()[0])
            raise InvalidActionError(
                f"action in batch row {row} selects nothing while {int(td['masked'][row].sum())} positions are "
                "still masked; every step must unmask at least one position"
            )
        return action

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        td = tensordict
        action = self._check_action(td["action"], td)
        masked, active = td["masked"], ~td["finished"].squeeze(-1)  # (B, L), (B,)
        forced = active & (td["step"].squeeze(-1) + 1 >= self.max_steps)  # (B,)
        taken = action | (masked & forced[:, None])  # (B, L)

        fill = td["reference"] if self.mode == "teacher" else td["draw"]  # (B, L)
        response = torch.where(taken, fill, td["tokens"][:, self.P :])  # (B, L)
        tokens = torch.cat([td["tokens"][:, : self.P], response], dim=1)  # (B, N)
        step = td["step"] + active[:, None].long()  # (B, 1)
        unmask_step = torch.where(taken, td["step"], td["unmask_step"])  # (B, L)
        block_done = (td["candidates"] & ~taken).sum(dim=1, keepdim=True) == 0  # (B, 1)
        block_step = torch.where(block_done, torch.zeros_like(step), td["block_step"] + active[:, None].long())
        new_masked = masked & ~taken
        finished = ~new_masked.any(dim=1, keepdim=True)  # (B, 1)
        newly_finished = finished & ~td["finished"]  # (B, 1)

        reward_likelihood = (td["logp_ref"] * taken).sum(dim=1, keepdim=True)  # (B, 1)
        reward_task = torch.zeros_like(reward_likelihood)
        if self.mode == "sample" and self.task_reward is not None and newly_finished.any():
            scores = self.task_reward(response, td["target"]).to(reward_task).reshape(-1, 1)  # (B, 1)
            reward_task = torch.where(newly_finished, scores, reward_task)
        reward_step_cost = -self.step_cost * active[:, None].float()
        reward = reward_step_cost + (reward_likelihood if self.mode == "teacher" else reward_task)

        all_done = bool(finished.all())
        if all_done:
            observed = self._blank_observation()
            nfe = td["nfe"]
        else:
            observed = self._observe(tokens, td["attention_mask"], td["reference"])
            nfe = td["nfe"] + (~finished).long()
        done = torch.full_like(finished, all_done)
        state = dict(
            tokens=tokens,
            attention_mask=td["attention_mask"],
            reference=td["reference"],
            target=td["target"],
            masked=new_masked,
            candidates=block_candidates(new_masked, self.block_length),
            finished=finished,
            step=step,
            block_step=block_step,
            nfe=nfe,
            unmask_step=unmask_step,
            action_taken=taken,
            reward=reward,
            reward_likelihood=reward_likelihood,
            reward_task=reward_task,
            reward_step_cost=reward_step_cost,
            done=done,
            terminated=done.clone(),
        )
        state.update(observed)
        return TensorDict(state, batch_size=self.batch_size, device=self.device)
