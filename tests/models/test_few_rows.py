"""hone.models.few_rows: the split kernel computes F.linear's product, and the choice between
the two kernels is made once per shape, from timings over the model's own weights."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from hone.models import few_rows


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out", [64, 65])  # an odd count of rows: the last one apart
def test_the_split_kernel_computes_the_linear_product(
    rows: int, dtype: torch.dtype, out: int
) -> None:
    g = torch.Generator().manual_seed(0)
    shapes = ((rows, 48), (out, 48), (out,))
    x, weight, bias = (torch.randn(*shape, generator=g).to(dtype) for shape in shapes)
    for b in (None, bias):
        got = few_rows.split(x, weight, b)
        assert got.shape == (rows, out) and got.dtype == dtype
        want = F.linear(x.float(), weight.float(), None if b is None else b.float())
        tolerance = 5e-2 if dtype == torch.bfloat16 else 1e-5
        assert torch.allclose(got.float(), want, atol=tolerance, rtol=tolerance)


def test_the_faster_kernel_is_chosen_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(few_rows, "_CHOSEN", {})
    passes: list[str] = []

    def slow_plain(x: torch.Tensor, weight: torch.Tensor, bias: object) -> torch.Tensor:
        passes.append("plain")
        time.sleep(0.002)  # a BLAS slow at a few rows
        return F.linear(x, weight)

    monkeypatch.setattr(few_rows, "plain", slow_plain)
    weights = [torch.randn(64, 48) for _ in range(3)] + [torch.randn(1, 48)]
    assert not few_rows.chosen(1, weights)
    state = torch.random.get_rng_state()
    few_rows.choose(1, weights)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's sampling untouched
    assert few_rows.chosen(1, weights) and not few_rows.chosen(2, weights)
    threads = torch.get_num_threads()
    assert few_rows._CHOSEN[("cpu", torch.float32, 1, 64, 48, threads)] is few_rows.split
    # a matrix of one row has no halves: F.linear's, untimed
    assert few_rows._CHOSEN[("cpu", torch.float32, 1, 1, 48, threads)] is slow_plain
    assert passes.count("plain") == 1 + 3 * 3  # set-up, then 3 passes over the 3 weights
    few_rows.choose(1, weights)  # chosen already: not timed again
    assert passes.count("plain") == 10
    x = torch.randn(1, 48)
    assert torch.allclose(few_rows.linear(x, weights[0]), F.linear(x, weights[0]), atol=1e-5)
    # where the split is no clear gain, F.linear's product stays
    monkeypatch.setattr(few_rows, "plain", F.linear)
    few_rows.choose(2, weights[:1])
    assert few_rows._CHOSEN[("cpu", torch.float32, 2, 64, 48, threads)] is not few_rows.split
