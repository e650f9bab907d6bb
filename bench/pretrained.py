"""Hugging Face checkpoints (issue 26): hone's models against transformers', side by side.

Three benches, each alternating hone and transformers in fresh subprocesses (peak RSS is a
process's own; 2 torch threads on both sides), printing each side's numbers and the ratio:

  memory      load a random checkpoint of Qwen2.5-0.5B's shape (bf16, ~1 GB, saved once by
              transformers' save_pretrained): peak RSS over the RSS after imports, against
              the weights' bytes; again after a forward of 8 tokens (every weight read)
  train-step  forward + backward of a SmolLM2-135M-shaped Llama (random, fp32) at batch
              4 x 256: tokens/s of the fastest step and peak RSS; hone's chunked loss (what
              the language task trains with) and its plain logits path
  generate    greedy decoding at batch 1 with the key/value cache, hone's `generate` against
              transformers' `generate`, the same weights in one process: tokens/s

Run: `.venv/bin/python bench/pretrained.py memory|train-step|generate [--rounds N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
CHECKPOINT = Path(os.environ.get("HONE_BENCH_DIR", "/tmp/hone-bench")) / "qwen2.5-0.5b-random"

# Qwen2.5-0.5B's config.json sizes (random weights: speed and memory do not depend on them)
QWEN_0_5B = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}
# SmolLM2-135M's sizes, with a 2048-token context
SMOLLM2_135M = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (VmRSS) or its peak so far (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def hone_llama(hf: dict[str, Any]) -> Any:
    from hone.config import ModelConfig
    from hone.models import MODELS, ModelSpec
    from hone.pretrained.architectures import hone_arch

    family, arch = hone_arch(hf)
    spec = ModelSpec("lm", (arch.block_size,), arch.vocab_size, vocab_size=arch.vocab_size)
    return MODELS.get(family)(ModelConfig(name=family, arch=arch), spec)


def hf_llama(hf: dict[str, Any]) -> Any:
    import transformers

    config = transformers.AutoConfig.for_model(**hf)
    config._attn_implementation = "sdpa"
    return transformers.AutoModelForCausalLM.from_config(config)


# ----------------------------------------------------------------------------- workers
def worker_memory(side: str) -> dict[str, Any]:
    import torch

    if side == "hone":
        from hone.pretrained.weights import load_pretrained
    else:
        import transformers
    torch.set_num_threads(THREADS)
    baseline = rss_bytes()
    start = time.perf_counter()
    if side == "hone":
        model, _, _ = load_pretrained(CHECKPOINT)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(CHECKPOINT, dtype="auto")
    seconds = time.perf_counter() - start
    loaded_peak = rss_bytes("VmHWM")
    with torch.no_grad():
        out = model(torch.arange(8)[None])
        (out if isinstance(out, torch.Tensor) else out.logits).sum().item()
    return {
        "baseline": baseline,
        "load_peak": loaded_peak - baseline,
        "forward_peak": rss_bytes("VmHWM") - baseline,
        "seconds": seconds,
        "dtype": str(next(model.parameters()).dtype),
    }


def worker_train(side: str, steps: int, batch: int, tokens: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    if side == "transformers":
        import transformers  # noqa: F401  (imported before the baseline, as hone is)
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = (hone_llama if side.startswith("hone") else hf_llama)(SMOLLM2_135M).train()
    V = SMOLLM2_135M["vocab_size"]
    data = torch.randint(0, V, (batch, tokens + 1))
    x, y = data[:, :-1], data[:, 1:]

    def step() -> float:
        if side == "hone":  # the language task's path: the model takes the targets
            loss = model(x, targets=y)
        elif side == "hone-plain":  # the plain path: (B, T, V) logits, then F.cross_entropy
            loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        else:  # transformers' own loss over its logits (labels are shifted inside)
            loss = model(input_ids=data[:, :-1], labels=data[:, :-1]).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss)

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # the fastest step: on a shared machine the slower ones measure the other jobs
    return {"tokens_per_second": batch * tokens / min(times), "peak": rss_bytes("VmHWM")}


def worker_generate(prompt_tokens: int, new_tokens: int, rounds: int) -> dict[str, Any]:
    import torch

    from hone.models.generate import generate
    from hone.pretrained.weights import NAME_MAPS

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    theirs = hf_llama(SMOLLM2_135M).eval()
    ours = hone_llama(SMOLLM2_135M).eval()
    names = NAME_MAPS["llama"]
    state = {names.to_hone(k): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict({k: v for k, v in state.items() if k is not None}, strict=False)
    prompt = torch.randint(0, SMOLLM2_135M["vocab_size"], (1, prompt_tokens))

    def run_hone() -> torch.Tensor:
        return generate(ours, prompt, new_tokens, temperature=0)

    def run_hf() -> torch.Tensor:
        return theirs.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )

    result: dict[str, list[float]] = {"hone": [], "transformers": []}
    outputs = {}
    sides = [("hone", run_hone), ("transformers", run_hf)]
    with torch.no_grad():
        for name, run in sides:  # warm-up
            outputs[name] = run()
        for i in range(rounds):
            for name, run in sides if i % 2 == 0 else sides[::-1]:
                start = time.perf_counter()
                run()
                result[name].append(new_tokens / (time.perf_counter() - start))
    same = int((outputs["hone"] == outputs["transformers"]).all())
    return {**result, "same_tokens": same}


# ----------------------------------------------------------------------------- driver
def in_subprocess(*args: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, __file__, "_worker", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode:
        sys.exit(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def save_checkpoint() -> None:
    """A random Qwen2.5-0.5B-shaped checkpoint in bf16, written by transformers."""
    if (CHECKPOINT / "model.safetensors").is_file():
        return
    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # initialize in bf16: no 2 GB fp32 copy
    config = transformers.AutoConfig.for_model(**QWEN_0_5B)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(CHECKPOINT)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def bench_memory(rounds: int) -> None:
    in_subprocess("save")
    weights = (CHECKPOINT / "model.safetensors").stat().st_size
    print(f"checkpoint {CHECKPOINT}: {mib(weights)} of bf16 weights (file size)")
    results: dict[str, list[dict[str, Any]]] = {"hone": [], "transformers": []}
    for i in range(rounds):
        for side in ("hone", "transformers") if i % 2 == 0 else ("transformers", "hone"):
            results[side].append(in_subprocess("memory", side))
    for side, runs in results.items():
        load = statistics.median(r["load_peak"] for r in runs)
        fwd = statistics.median(r["forward_peak"] for r in runs)
        secs = statistics.median(r["seconds"] for r in runs)
        print(
            f"{side:>12}: baseline {mib(runs[0]['baseline'])}, load peak +{mib(load)} "
            f"({load / weights:.2f}x weights), after a forward +{mib(fwd)} "
            f"({fwd / weights:.2f}x), load {secs:.2f} s, {runs[0]['dtype']}"
        )


def bench_train(rounds: int, steps: int) -> None:
    results: dict[str, list[dict[str, Any]]] = {"hone": [], "hone-plain": [], "transformers": []}
    order = list(results)
    for i in range(rounds):
        for side in order if i % 2 == 0 else order[::-1]:
            results[side].append(in_subprocess("train", side, str(steps)))
    summary = {}
    for side, runs in results.items():
        speed = statistics.median(r["tokens_per_second"] for r in runs)
        peak = statistics.median(r["peak"] for r in runs)
        summary[side] = (speed, peak)
        per_round = ", ".join(f"{r['tokens_per_second']:.0f}" for r in runs)
        print(f"{side:>12}: {speed:.0f} tokens/s (rounds {per_round}), peak RSS {mib(peak)}")
    hf_speed, hf_peak = summary["transformers"]
    for side in ("hone", "hone-plain"):
        speed, peak = summary[side]
        print(f"{side}/transformers: speed {speed / hf_speed:.2f}x, peak RSS {peak / hf_peak:.2f}x")


def bench_generate(rounds: int, prompt_tokens: int, new_tokens: int) -> None:
    r = in_subprocess("generate", str(prompt_tokens), str(new_tokens), str(rounds))
    for side in ("hone", "transformers"):
        rates = ", ".join(f"{x:.1f}" for x in r[side])
        print(f"{side:>12}: {statistics.median(r[side]):.1f} tokens/s (rounds {rates})")
    ratio = statistics.median(h / t for h, t in zip(r["hone"], r["transformers"], strict=True))
    print(
        f"hone/transformers: {ratio:.2f}x (median of per-round ratios); same tokens: "
        f"{bool(r['same_tokens'])}"
    )


def main() -> None:
    if sys.argv[1:2] == ["_worker"]:
        kind, *args = sys.argv[2:]
        if kind == "save":
            save_checkpoint()
            result: dict[str, Any] = {}
        elif kind == "memory":
            result = worker_memory(args[0])
        elif kind == "train":
            result = worker_train(args[0], int(args[1]), batch=4, tokens=256)
        else:
            result = worker_generate(*map(int, args))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=["memory", "train-step", "generate"])
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--steps", type=int, default=3, help="train-step: timed steps a round")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    if args.bench == "memory":
        bench_memory(args.rounds)
    elif args.bench == "train-step":
        bench_train(args.rounds, args.steps)
    else:
        bench_generate(args.rounds, args.prompt_tokens, args.new_tokens)


if __name__ == "__main__":
    main()
