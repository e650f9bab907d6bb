"""Muon's optimizer step and training speed on CPUs with and without native bf16 (issue 18).

Step time: the median of one optimizer step over the 16 hidden matrices of the char GPT
(gpt-shakespeare-char, built by hone's own builder, gradients from one backward pass), every
variant taking turns in one process:
  - torch.optim.Muon: bf16 Newton–Schulz one matrix at a time (hone's Muon before issue 18),
  - hone's Muon in fp32, one matrix at a time, then batched by shape, and in bf16 batched,
  - fused AdamW over the same matrices;
and the whole model's optimizer as `build_optimizer` makes it: muon (precision auto) vs adamw.
Training: tokens/s of `hone train gpt-shakespeare-char` with optim.name=muon against adamw,
runs taking turns, the median of the logged windows after the first of each run.

Everything runs twice: on this CPU as it is, and in a subprocess that emulates a CPU without
bf16 instructions (AVX2 only) by capping MKL (fp32 matmuls), oneDNN (bf16 matmuls) and ATen's
own kernels at AVX2, with HONE_NATIVE_BF16=0 since /proc/cpuinfo still shows this CPU's flags.
Run: `nice .venv/bin/python bench/muon_step.py` (about 10 minutes on 2 idle cores; `--cpus`,
`--rounds=0` and `--train-rounds=0` run parts of it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hone.config import load_config  # noqa: E402
from hone.data import build_data  # noqa: E402
from hone.data.base import TokenData  # noqa: E402
from hone.engine import Trainer  # noqa: E402
from hone.hardware import native_bf16  # noqa: E402
from hone.models import ModelSpec, build_model  # noqa: E402
from hone.optim import build_optimizer, split_muon_params  # noqa: E402
from hone.optim.muon import Muon, newton_schulz  # noqa: E402
from hone.track.run import read_metrics  # noqa: E402

RECIPE = "gpt-shakespeare-char"
AVX2_ONLY = {
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "HONE_NATIVE_BF16": "0",
}
THREADS = 2


def char_gpt() -> torch.nn.Module:
    """The recipe's GPT with gradients from one backward pass on a training batch's shape."""
    cfg = load_config(RECIPE, [])
    data = build_data(cfg)
    assert isinstance(data, TokenData)
    vocab = data.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model, ModelSpec("lm", (cfg.model.block_size,), vocab, vocab))
    tokens = torch.randint(0, vocab, (cfg.train.batch_size, cfg.model.block_size + 1))
    logits = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    return model


def step_times(rounds: int) -> dict[str, tuple[float, float]]:
    """(median, best) milliseconds per optimizer step of each variant, taking turns."""
    model = char_gpt()
    cfg = load_config(RECIPE, [])
    kwargs: dict[str, Any] = {"lr": cfg.optim.muon_lr, "weight_decay": cfg.optim.weight_decay}

    def twin() -> torch.nn.Module:
        copied = copy.deepcopy(model)  # deepcopy leaves the gradients behind
        for source, param in zip(model.parameters(), copied.parameters(), strict=True):
            assert source.grad is not None
            param.grad = source.grad.clone()
        return copied

    def on_matrices(
        build: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    ) -> Callable[[], None]:
        return build(split_muon_params(twin())[0]).step

    def whole_model(name: str) -> Callable[[], None]:
        optim_cfg = load_config(RECIPE, [f"optim.name={name}"]).optim
        return build_optimizer(optim_cfg, twin(), torch.device("cpu")).step

    # The matrices' gradients stacked as `orthogonalize` stacks them (tall ones transposed), to
    # time Newton–Schulz alone in fp32: the plain iteration against the Gram form where it pays.
    stacks: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for param in split_muon_params(model)[0]:
        assert param.grad is not None
        grad = param.grad if param.size(0) <= param.size(1) else param.grad.mT
        stacks.setdefault(tuple(grad.shape), []).append(grad)
    group = torch.optim.Muon(split_muon_params(model)[0]).param_groups[0]
    ns_args = (group["ns_coefficients"], group["ns_steps"], group["eps"])

    def newton_schulz_only(gram_form: bool | None) -> Callable[[], None]:
        xs = [torch.stack(grads) for grads in stacks.values()]

        def run() -> None:
            for x in xs:
                newton_schulz(x, *ns_args, gram_form=gram_form)

        return run

    variants = {
        "matrices: torch.optim.Muon (bf16, one by one)": on_matrices(
            lambda p: torch.optim.Muon(p, **kwargs)
        ),
        "matrices: hone Muon fp32, one by one": on_matrices(
            lambda p: Muon(p, ns_dtype=torch.float32, batched=False, **kwargs)
        ),
        "matrices: hone Muon fp32, batched": on_matrices(
            lambda p: Muon(p, ns_dtype=torch.float32, batched=True, **kwargs)
        ),
        "matrices: hone Muon bf16, batched": on_matrices(
            lambda p: Muon(p, ns_dtype=torch.bfloat16, batched=True, **kwargs)
        ),
        "matrices: AdamW (fused)": on_matrices(
            lambda p: torch.optim.AdamW(p, lr=cfg.optim.lr, fused=True)
        ),
        "Newton–Schulz only, fp32 batched: plain": newton_schulz_only(False),
        "Newton–Schulz only, fp32 batched: Gram form where it pays": newton_schulz_only(None),
        "whole model: muon (auto)": whole_model("muon"),
        "whole model: adamw": whole_model("adamw"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds + 3):  # 3 warm-up rounds
        for name, step in variants.items():
            start = time.perf_counter()
            step()
            if round_index >= 3:
                times[name].append(1e3 * (time.perf_counter() - start))
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


TRAINING = {
    "adamw": ["optim.name=adamw"],
    "muon (precision auto)": ["optim.name=muon"],
    "muon, fp32 Newton–Schulz": ["optim.name=muon", "optim.muon_precision=fp32"],
    "muon, bf16 Newton–Schulz": ["optim.name=muon", "optim.muon_precision=bf16"],
}


def tokens_per_second(overrides: list[str], steps: int, max_seconds: float) -> list[float]:
    """Tokens/s of the logged windows after the first, of one short training run."""
    overrides = [
        *overrides,
        f"train.max_steps={steps}",
        # Bounds the runs that emulate bf16 (about 1 s per step) to a few logged windows.
        f"train.max_seconds={max_seconds}",
        "train.eval_every=0",
        "train.sample_tokens=0",
        "log.every=5",
        "log.stats_every=0",
        "log.tensorboard=false",
        "log.progress=off",
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(config=load_config(RECIPE, overrides), run_dir=run_dir).fit()
        events = [e for e in read_metrics(run_dir) if e["split"] == "train"]
    # The first window holds the warm-up; a run cut short by max_seconds may have no other.
    return [e["tokens_per_second"] for e in events[1:] or events]


def training(steps: int, rounds: int, max_seconds: float) -> dict[str, tuple[float, float]]:
    """(median, best) tokens/s of the logged windows of `rounds` runs of each setting, the
    settings taking turns."""
    results: dict[str, list[float]] = {name: [] for name in TRAINING}
    for _ in range(rounds):
        for name, overrides in TRAINING.items():
            results[name] += tokens_per_second(overrides, steps, max_seconds)
    return {name: (statistics.median(values), max(values)) for name, values in results.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    return {
        "native_bf16": native_bf16(torch.device("cpu")),
        "steps_ms": step_times(args.rounds) if args.rounds else {},
        "tokens_per_second": training(args.train_steps, args.train_rounds, args.max_seconds)
        if args.train_rounds
        else {},
    }


def report(title: str, result: dict[str, Any]) -> None:
    """Markdown tables: medians, and the best (on a shared machine, the least disturbed)."""
    steps_ms, tokens = result["steps_ms"], result["tokens_per_second"]
    picked = "bf16" if result["native_bf16"] else "fp32"
    print(f"\n### {title}: native bf16 detected: {result['native_bf16']} (auto picks {picked})")
    if steps_ms:
        adamw = steps_ms["matrices: AdamW (fused)"]
        torch_muon = steps_ms["matrices: torch.optim.Muon (bf16, one by one)"]
        print("| optimizer step | median ms | best ms | speed-up over torch's Muon | / AdamW |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, (median, best) in steps_ms.items():
            print(
                f"| {name} | {median:.2f} | {best:.2f} | {torch_muon[0] / median:.2f}x "
                f"(best {torch_muon[1] / best:.2f}x) | {median / adamw[0]:.1f}x |"
            )
    if tokens:
        print("\n| training | median tokens/s | best | vs adamw |\n| --- | ---: | ---: | ---: |")
        for name, (median, best) in tokens.items():
            ratio, best_ratio = median / tokens["adamw"][0], best / tokens["adamw"][1]
            print(f"| {name} | {median:,.0f} | {best:,.0f} | {ratio:.2f} (best {best_ratio:.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30, help="timed steps per variant (0: skip)")
    parser.add_argument("--train-steps", type=int, default=60, help="per training run")
    parser.add_argument("--train-rounds", type=int, default=5, help="runs per setting (0: skip)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per training run")
    parser.add_argument("--cpus", default="native,avx2", help="this CPU (native), emulated AVX2")
    parser.add_argument("--only", action="store_true", help="measure here, print JSON")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args)))
        return
    print(f"torch {torch.__version__}, {THREADS} threads, load average {os.getloadavg()}")
    for cpu in args.cpus.split(","):
        env = {"native": {}, "avx2": AVX2_ONLY}[cpu]
        command = [sys.executable, __file__, "--only", f"--rounds={args.rounds}"]
        command += [f"--train-steps={args.train_steps}", f"--train-rounds={args.train_rounds}"]
        command += [f"--max-seconds={args.max_seconds}"]
        # A fresh process for each: the ISA caps are read once, when MKL and oneDNN load.
        output = subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, check=True
        ).stdout
        title = {"native": "this CPU", "avx2": "emulated AVX2-only CPU"}[cpu]
        report(title, json.loads(output.strip().splitlines()[-1]))
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
