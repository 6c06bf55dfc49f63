"""Quick probes of a training MDM: arithmetic per operation and greedy decoding.

Both work on the raw transformers model so that MDM training does not depend on
the decoding code. Shapes: B batch, N = P + L sequence, L response length.
"""

from __future__ import annotations

import torch

from orderpolicy.batching import TokenBatch

OPERATION_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


def _logits(model, ids, attention_mask, use_bf16):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
        return model(input_ids=ids, attention_mask=attention_mask).logits.float()


@torch.no_grad()
def operation_accuracy(model, batch: TokenBatch, tokenizer, mask_id: int, use_bf16: bool) -> dict:
    """Accuracy of each calculator result given its operands.

    For every ``a op b = c >>`` in a reference response, mask the response from
    the first ``c`` to the end and check the argmax there. Returns
    ``acc_add``, ``acc_sub``, ``acc_mul``, ``acc_div`` (only for operations present).
    """
    close_id = tokenizer.convert_tokens_to_ids(">>")
    op_ids = {tokenizer.convert_tokens_to_ids(op): name for op, name in OPERATION_NAMES.items()}
    P = batch.prompt_length
    rows, cuts, names = [], [], []
    for row, response in enumerate(batch.response.tolist()):
        for j, token in enumerate(response):
            if token == close_id and j >= 5 and response[j - 4] in op_ids:
                rows.append(row)
                cuts.append(P + j - 1)  # position of the result c
                names.append(op_ids[response[j - 4]])
    if not rows:
        return {}
    index = torch.tensor(rows)
    ids = batch.input_ids[index].clone()  # (M, N)
    cut = torch.tensor(cuts)
    positions = torch.arange(ids.shape[1])[None, :]  # (1, N)
    targets = ids[torch.arange(len(rows)), cut]  # (M,)
    ids[positions >= cut[:, None]] = mask_id
    correct = []
    for start in range(0, len(rows), 256):
        chunk = slice(start, start + 256)
        logits = _logits(model, ids[chunk], batch.attention_mask[index][chunk], use_bf16)  # (m, N, V)
        predicted = logits[torch.arange(logits.shape[0]), cut[chunk]].argmax(-1)  # (m,)
        correct.append(predicted == targets[chunk])
    hits = torch.cat(correct)
    result = {}
    for name in OPERATION_NAMES.values():
        selected = torch.tensor([n == name for n in names])
        if selected.any():
            result[f"acc_{name}"] = hits[selected].float().mean().item()
    return result


@torch.no_grad()
def greedy_accuracy(model, batch: TokenBatch, tokenizer, use_bf16: bool) -> float:
    """Share of final answers right when decoding one token per step, highest confidence first.

    The answer is compared, not the whole text, because gsm-synth draws the
    wording of each line at random, so a right answer can come in other words.
    """
    from orderpolicy.tasks.scoring import extract_strict

    mask_id = tokenizer.mask_token_id
    P = batch.prompt_length
    ids = batch.input_ids.clone()
    ids[:, P:] = mask_id
    rows = torch.arange(ids.shape[0])
    for _ in range(ids.shape[1] - P):
        logits = _logits(model, ids, batch.attention_mask, use_bf16)[:, P:]  # (B, L, V)
        confidence, token = logits.softmax(-1).max(-1)  # (B, L)
        confidence = confidence.masked_fill(ids[:, P:] != mask_id, -1.0)
        pick = confidence.argmax(-1)  # (B,)
        ids[rows, P + pick] = token[rows, pick]
    decoded = tokenizer.batch_decode(ids[:, P:], skip_special_tokens=True)
    references = tokenizer.batch_decode(batch.response, skip_special_tokens=True)
    hits = [extract_strict(text) == extract_strict(ref) for text, ref in zip(decoded, references)]
    return sum(hits) / len(hits)
