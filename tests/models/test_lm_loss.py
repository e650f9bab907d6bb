"""The chunked language-model loss is the plain one: the same value and the same gradients,
for the GPT and the Llama, with label smoothing, ignored targets, tied and untied heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hone.config import ModelConfig
from hone.models import ModelSpec, build_model, lm_loss
from hone.models.lm_loss import chunked_cross_entropy

VOCAB = 96


def tiny(name: str, **changes: object) -> nn.Module:
    torch.manual_seed(0)
    fields = {"n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 16, **changes}
    return build_model(ModelConfig(name=name, **fields), ModelSpec("lm", (16,), VOCAB, VOCAB))


def plain_and_chunked(
    model: nn.Module, idx: torch.Tensor, targets: torch.Tensor, smoothing: float
) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    results = []
    for chunked in (False, True):
        model.zero_grad(set_to_none=True)
        if chunked:
            loss = model(idx, targets=targets, label_smoothing=smoothing)
        else:
            logits = model(idx)
            loss = F.cross_entropy(
                logits.reshape(-1, VOCAB), targets.reshape(-1), label_smoothing=smoothing
            )
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    return results


@pytest.mark.parametrize(
    ("name", "changes", "smoothing"),
    [
        ("gpt", {}, 0.0),
        ("gpt", {"tie_embeddings": False}, 0.1),
        ("llama", {"n_kv_head": 2}, 0.0),
        ("llama", {"n_kv_head": 2, "tie_embeddings": False}, 0.1),
    ],
)
def test_the_chunked_loss_and_its_gradients_are_the_plain_ones(
    name: str, changes: dict[str, object], smoothing: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lm_loss, "LOGITS_PER_CHUNK", VOCAB * 5)  # 5 tokens a chunk: 7 chunks
    model = tiny(name, **changes).train()
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, VOCAB, (2, 16), generator=gen)
    targets = torch.randint(0, VOCAB, (2, 16), generator=gen)
    targets[0, 3] = targets[1, 9] = -100  # ignored, as F.cross_entropy ignores them
    (plain, plain_grads), (chunked, chunked_grads) = plain_and_chunked(
        model, idx, targets, smoothing
    )
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-6)
    assert chunked_grads.keys() == plain_grads.keys()
    for param_name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[param_name], grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])  # chunked, and a head run whole
def test_only_the_labelled_rows_go_through_the_head(
    bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt's and a pad's targets are ignored: their rows never reach the head, and the
    loss and the gradients are the plain loss's over all rows."""
    gen = torch.Generator().manual_seed(5)
    head = nn.Linear(8, VOCAB, bias=bias)
    hidden = torch.randn(2, 16, 8, generator=gen, requires_grad=True)
    targets = torch.randint(0, VOCAB, (2, 16), generator=gen)
    targets[0, :6] = targets[1, 10:] = -100  # a prompt, a padded tail: 12 of 32 ignored
    seen: list[int] = []
    chunked = lm_loss.chunked_cross_entropy
    monkeypatch.setattr(
        lm_loss,
        "chunked_cross_entropy",
        lambda rows, *args: seen.append(rows.size(0)) or chunked(rows, *args),
    )
    hook = head.register_forward_hook(lambda module, args, out: seen.append(args[0].size(0)))
    loss = lm_loss.lm_head_loss(head, hidden, targets, 0.1)
    hook.remove()
    assert seen == [20]
    loss.backward()
    got = (hidden.grad, head.weight.grad)
    hidden.grad = head.weight.grad = None
    plain = F.cross_entropy(
        head(hidden).reshape(-1, VOCAB), targets.reshape(-1), label_smoothing=0.1
    )
    plain.backward()
    torch.testing.assert_close(loss, plain, rtol=1e-6, atol=1e-6)
    assert got[0] is not None and bool((got[0][0, :6] == 0).all())  # ignored rows: zero
    torch.testing.assert_close(got[0], hidden.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got[1], head.weight.grad, rtol=1e-5, atol=1e-7)


def test_without_gradients_only_the_loss_is_computed() -> None:
    gen = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(10, 8, generator=gen), torch.randn(VOCAB, 8, generator=gen)
    targets = torch.randint(0, VOCAB, (10,), generator=gen)
    with torch.no_grad():
        loss = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=3)
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.T, targets))


def test_under_bf16_autocast_the_loss_follows_the_plain_path() -> None:
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(12, 16, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, VOCAB, (12,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=5)
        plain = F.cross_entropy(F.linear(hidden, weight).float(), targets)
    chunked.backward()
    assert hidden.grad is not None and weight.grad is not None
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    torch.testing.assert_close(chunked, plain, rtol=1e-2, atol=1e-2)


def test_the_language_task_trains_through_the_model_loss_of_hone_models_only() -> None:
    from hone.config import LossConfig
    from hone.engine.language_task import LanguageModel

    task, gpt = LanguageModel(), tiny("gpt")
    model_loss = task.model_loss(gpt, LossConfig(name="cross_entropy", label_smoothing=0.1))
    assert model_loss is not None
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(4))
    plain = F.cross_entropy(gpt(idx).reshape(-1, VOCAB), idx.reshape(-1), label_smoothing=0.1)
    torch.testing.assert_close(model_loss(gpt, idx, idx), plain)
    custom = nn.Sequential(nn.Embedding(VOCAB, 8), nn.Linear(8, VOCAB))  # a user's model
    assert task.model_loss(custom, LossConfig(name="cross_entropy")) is None


def test_evaluation_takes_the_loss_from_the_model_without_logits() -> None:
    """hone.engine.tasks.evaluate with the task's model_loss: the same loss and perplexity,
    and the model never returns the (B, T, V) logits."""
    from contextlib import nullcontext

    from hone.config import LossConfig
    from hone.engine.language_task import LanguageModel
    from hone.engine.tasks import evaluate

    task, model = LanguageModel(), tiny("llama")
    cfg = LossConfig(name="cross_entropy")
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randint(0, VOCAB, (3, 16), generator=g),) * 2 for _ in range(2)]
    batches = [(x, y.masked_fill(y % 5 == 0, -100)) for x, y in batches]  # ignored targets
    cpu = torch.device("cpu")
    plain = evaluate(model, batches, task.loss(cfg), task, cpu, nullcontext)
    outputs: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda module, args, out: outputs.append(out))
    lean = evaluate(
        model, batches, task.loss(cfg), task, cpu, nullcontext, None, task.model_loss(model, cfg)
    )
    hook.remove()
    assert lean == pytest.approx(plain, rel=1e-6)
    assert all(out.dim() == 0 for out in outputs)  # the loss, never logits


@pytest.mark.parametrize(("rows", "most"), [(1024, 341), (32, 5), (7, 7), (8, 7), (1, 341)])
def test_chunks_are_as_few_as_the_bound_allows_and_even(rows: int, most: int) -> None:
    chunk = lm_loss.even_chunk(rows, most)
    sizes = [min(chunk, rows - start) for start in range(0, rows, chunk)]
    assert sum(sizes) == rows and max(sizes) <= most
    assert len(sizes) == -(-rows // most)  # no more chunks than the bound needs
    assert max(sizes) - min(sizes) < len(sizes)  # no sliver of a chunk at the end


def test_a_scaled_loss_scales_both_gradients() -> None:
    """Backward scales the gradients the forward computed unless the loss comes back as is."""
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(10, 8, generator=gen)
    weight = torch.randn(VOCAB, 8, generator=gen)
    targets = torch.randint(0, VOCAB, (10,), generator=gen)
    grads = []
    for scale, chunked in ((1.0, True), (0.25, True), (0.25, False)):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if chunked:
            loss = chunked_cross_entropy(h, w, targets, chunk_tokens=3)
        else:
            loss = F.cross_entropy(h @ w.T, targets)
        (loss * scale).backward()
        assert h.grad is not None and w.grad is not None
        grads.append((h.grad, w.grad))
    for got, want in zip(grads[1], grads[2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[1][1] * 4, grads[0][1], rtol=1e-5, atol=1e-7)


def test_smollm2_batch_is_four_even_chunks() -> None:
    """1,024 tokens of a 49,152-word head: 341 logits rows fit the bound, so four chunks."""
    assert lm_loss.LOGITS_PER_CHUNK // 49152 == 341
    assert lm_loss.even_chunk(1024, 341) == 256
