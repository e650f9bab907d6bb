"""Hugging Face checkpoints (issue 26): hone's models against transformers', side by side.

Three benches, 2 torch threads on both sides, printing each side's numbers and the ratio:

  memory      load a random checkpoint of Qwen2.5-0.5B's shape (bf16, ~1 GB, saved once by
              transformers' save_pretrained), each side in fresh subprocesses alternated:
              peak RSS over the RSS after imports, against the weights' bytes; again after a
              forward of 8 tokens (every weight read). hone twice: load_pretrained, and the
              checkpoint's view loaded as a run (LoadedRun, what `hone sample|eval|serve
              CHECKPOINT` do); the view's one-time writing too
  train-step  forward + backward of a SmolLM2-135M-shaped Llama (random, fp32) at batch
              4 x 256. Peak RSS of fresh subprocesses alternated: hone's chunked loss (what
              the language task trains with), its plain logits path, both in the
              environment `hone train` starts its process in (glibc's malloc tunables,
              hone.glibc_malloc), the chunked loss without it (hone-untuned); transformers
              as it runs, and in hone's environment (transformers-tuned). Speed in
              one process, the two sides' steps alternated (same data, no optimizer), and
              with them the step's matmuls and attention alone (`matmul_floor`): the
              ceiling of any implementation at this precision. And each side in a process
              of its own, as each trains (hone's trainer keeps the memory a step frees:
              hone.engine.allocator), the processes alternated: the fair figure, since
              transformers' steps (under glibc's default malloc) run slower after hone's in
              one process: 4.6-5.3 s against 4.0-4.4 alone, 290-400 thousand page faults a
              step against 280 thousand (a /tmp script, Intel Xeon, seventh session)
  generate    greedy decoding at batch 1 with the key/value cache, hone's `generate` against
              transformers' `generate`, the same weights in one process, alternated: tokens/s
              (weights and compute in fp32, or both sides in bf16: --precision);
              and two floors: the model's matrices alone multiplied by one vector a token
              (by the kernel hone.models.few_rows chooses), and their bytes alone read once
              a token (the memory's bandwidth: no decoder of these weights is faster)

  lean-decode hone's lean decode step against its general path, fp32, in one process
              alternated (`worker_lean_decode`: batch 1, a LoRA run, GPT-2's shape, batches of
              a slot cache)

Run: `.venv/bin/python bench/pretrained.py memory|train-step|generate|lean-decode [--rounds N]`
(train-step: `--parts memory speed alone`, any of them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.workers import SMOLLM2_135M as SMOLLM2_135M_CONFIG  # noqa: E402
from bench.workers import as_hone_trains, in_subprocess, mib, rss_bytes  # noqa: E402

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
SMOLLM2_135M = {**SMOLLM2_135M_CONFIG, "max_position_embeddings": 2048}


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
    elif side in ("hone-view", "hone-view-write"):
        from hone.engine.inference import LoadedRun
        from hone.pretrained.view import checkpoint_view
    else:
        import transformers
    torch.set_num_threads(THREADS)
    baseline = rss_bytes()
    start = time.perf_counter()
    if side == "hone":
        model, _, _ = load_pretrained(CHECKPOINT)
    elif side == "hone-view-write":  # what the first `hone sample CHECKPOINT` does first
        checkpoint_view(CHECKPOINT)
        return {"baseline": baseline, "write_peak": rss_bytes("VmHWM") - baseline}
    elif side == "hone-view":  # `hone sample|eval|serve CHECKPOINT`: the view as a run
        model = LoadedRun.load(CHECKPOINT, "cpu").model
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


def train_step(side: str, model: Any, data: Any) -> Any:
    """A function running one forward + backward of `model` on `data` (B, T + 1) as `side`
    trains: hone through the language task's path (the model takes the targets: chunked
    loss), hone-plain through (B, T, V) logits and F.cross_entropy, transformers through its
    own loss over its logits (labels are shifted inside)."""
    import torch.nn.functional as F

    x, y = data[:, :-1], data[:, 1:]
    V = SMOLLM2_135M["vocab_size"]

    def step() -> float:
        if side == "hone":
            loss = model(x, targets=y)
        elif side == "hone-plain":
            loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        else:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def matmul_floor(model: Any, batch: int, tokens: int) -> Any:
    """A function running the matmuls any training step of `model` at batch x tokens must:
    each linear layer's (the head's too, all tokens at once) forward product and backward's
    two (the input's gradient and the weight's), and attention forward and backward (SDPA,
    causal, as both sides run it). Nothing else a step does (norms, SwiGLU, rotary positions,
    the loss, autograd, Python) is in it: a ceiling on any implementation's tokens/s."""
    import torch
    import torch.nn.functional as F

    n = batch * tokens
    linears = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.size(1): torch.randn(n, w.size(1)) for w in linears}
    grads = {w.size(0): torch.randn(n, w.size(0)) for w in linears}
    cfg = model.config
    H, G, D = cfg.n_head, cfg.kv_heads, cfg.head_width
    q = torch.randn(batch, H, tokens, D, requires_grad=True)
    k, v = (torch.randn(batch, G, tokens, D, requires_grad=True) for _ in range(2))

    def step() -> float:
        with torch.no_grad():
            for w in linears:
                x, g = inputs[w.size(1)], grads[w.size(0)]
                F.linear(x, w), g @ w, g.t() @ x
        for _ in model.blocks:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=G != H)
            y.backward(torch.ones_like(y))
        return 0.0

    return step


def worker_train_memory(side: str, batch: int, tokens: int) -> dict[str, Any]:
    """Peak RSS of a process that builds `side`'s model and runs two steps."""
    import torch

    if side.startswith("transformers"):
        import transformers  # noqa: F401  (imported before the baseline, as hone is)
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    baseline = rss_bytes()
    model = (hone_llama if side.startswith("hone") else hf_llama)(SMOLLM2_135M).train()
    step = train_step(
        side.removesuffix("-untuned"),
        model,
        torch.randint(0, SMOLLM2_135M["vocab_size"], (batch, tokens + 1)),
    )
    with allocator_as_run(side):
        step()
        step()
    return {"peak": rss_bytes("VmHWM"), "baseline": baseline}


def allocator_as_run(side: str) -> Any:
    """What a side's steps run under in its own training process: hone's trainer keeps the
    memory a step frees (hone.engine.allocator); transformers leaves malloc as it is."""
    import contextlib

    from hone.engine.allocator import freed_memory_kept

    return freed_memory_kept() if side.startswith("hone") else contextlib.nullcontext()


def worker_train_speed_alone(side: str, steps: int) -> dict[str, Any]:
    """Seconds of `steps` steps of one side in a process of its own, under what its
    training process runs it with (`allocator_as_run`), after one warm-up step."""
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    data = torch.randint(0, SMOLLM2_135M["vocab_size"], (4, 257))
    model = (hone_llama if side == "hone" else hf_llama)(SMOLLM2_135M).train()
    step = train_step(side, model, data)
    seconds = []
    with allocator_as_run(side):
        step()
        for _ in range(steps):
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
    return {"seconds": seconds}


def worker_train_speed(rounds: int, batch: int, tokens: int, layers: int) -> dict[str, Any]:
    """Seconds of each side's steps, the sides alternated step by step in one process (the
    machine's load then weighs on both alike), same data, same threads, no optimizer."""
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    config = {**SMOLLM2_135M, "num_hidden_layers": layers or SMOLLM2_135M["num_hidden_layers"]}
    data = torch.randint(0, config["vocab_size"], (batch, tokens + 1))
    ours = hone_llama(config).train()
    sides = {
        "hone": train_step("hone", ours, data),
        "transformers": train_step("transformers", hf_llama(config).train(), data),
        "matmul floor": matmul_floor(ours, batch, tokens),
    }
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for step in sides.values():  # warm-up
        step()
    for i in range(rounds):
        for side in list(sides) if i % 2 == 0 else list(sides)[::-1]:
            start = time.perf_counter()
            sides[side]()
            seconds[side].append(time.perf_counter() - start)
    return seconds


def worker_generate(
    prompt_tokens: int, new_tokens: int, rounds: int, precision: str = "fp32"
) -> dict[str, Any]:
    import torch

    from hone.models.generate import generate
    from hone.pretrained.weights import NAME_MAPS

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    theirs = hf_llama(SMOLLM2_135M).eval()
    ours = hone_llama(SMOLLM2_135M).eval()
    names = NAME_MAPS["llama"]
    state = {names.to_hone(k): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict({k: v for k, v in state.items() if k is not None}, strict=False)
    theirs, ours = theirs.to(dtype), ours.to(dtype)  # both sides' weights in `precision`
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

    # The floors. Matvecs: each new token multiplies one vector by every weight matrix of the
    # model (the linear layers and the head), by the kernel hone.models.few_rows finds fastest
    # for the shape (F.linear's or the split one); nothing else a decoder does (norms, rotary
    # positions, attention, sampling, Python) is in it. Read: every matrix summed, its bytes
    # read from memory once and nothing computed: the memory's bandwidth, any decoder's bound.
    from hone.models import few_rows

    matrices = [m.weight for m in ours.modules() if isinstance(m, torch.nn.Linear)]
    vectors = {n: torch.randn(1, n, dtype=dtype) for n in {w.size(1) for w in matrices}}
    few_rows.choose(1, matrices)

    def run_floor() -> torch.Tensor:
        for _ in range(new_tokens):
            for weight in matrices:
                out = few_rows.linear(vectors[weight.size(1)], weight)
        return out

    def run_read() -> torch.Tensor:
        for _ in range(new_tokens):
            for weight in matrices:
                out = weight.sum()
        return out

    sides = [
        ("hone", run_hone), ("transformers", run_hf), ("matvec floor", run_floor),
        ("read floor", run_read),
    ]  # fmt: skip
    result: dict[str, list[float]] = {name: [] for name, _ in sides}
    outputs = {}
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


GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "pos": "learned",
              "norm": "layernorm", "mlp": "gelu_tanh", "bias": True}  # fmt: skip


def worker_lean_decode(case: str, rounds: int, new_tokens: int) -> dict[str, Any]:
    """Tokens/s of hone's lean decode step (hone.models.llama_decode / gpt_decode, each
    product by hone.models.few_rows) against the general path (the model's modules and
    F.linear), fp32, alternated in one process: `llama` greedy generate at batch 1 of
    SmolLM2-135M's shape; `lora` the same with rank-16 adapters on every linear layer;
    `gpt2` GPT-2 small's shape; `slots4` / `slots8` that many rows of a slot cache (hone
    serve's batches), prompts of different lengths, decoding together."""
    import torch

    from hone.config import ModelConfig
    from hone.finetune.lora import LoRA, lora_layers
    from hone.models import ModelSpec, build_model, gpt_decode, llama_decode
    from hone.models.generate import generate
    from hone.models.slot_cache import SlotCache

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if case == "gpt2":
        V, family = 50257, gpt_decode
        cfg = ModelConfig(name="gpt", **GPT2_SMALL)  # type: ignore[arg-type]
        model = build_model(cfg, ModelSpec("lm", (1024,), V, vocab_size=V))
    else:
        V, family, model = SMOLLM2_135M["vocab_size"], llama_decode, hone_llama(SMOLLM2_135M)
    if case == "lora":
        LoRA(16, 32, 0.0, "all-linear").convert(model)
        with torch.no_grad():  # B off zero: the adapters count
            for layer in lora_layers(model).values():
                layer.lora_b.weight.normal_(0, 0.01)
    model.eval()
    lean_decodable = family.lean_decodable
    prompt = torch.randint(0, V, (1, 32))
    rows = int(case.removeprefix("slots")) if case.startswith("slots") else 1

    def run(lean: bool) -> tuple[float, torch.Tensor]:
        family.lean_decodable = lean_decodable if lean else (lambda *args: False)
        if rows == 1:
            start = time.perf_counter()
            out = generate(model, prompt, new_tokens, temperature=0)
            return new_tokens / (time.perf_counter() - start), out
        cache = SlotCache(len(model.blocks), rows, 32 + 3 * rows + new_tokens)
        for r in range(rows):  # prompts of different lengths, each into its slot
            cache.select([r], 8 + 3 * r, prompt.device)
            model(prompt[:, : 8 + 3 * r], cache)
        token, tokens = torch.zeros(rows, 1, dtype=torch.long), []
        start = time.perf_counter()
        for _ in range(new_tokens):
            cache.select(list(range(rows)), 1, token.device)
            token = model(token, cache)[:, -1].argmax(-1, keepdim=True)
            tokens.append(token)
        return rows * new_tokens / (time.perf_counter() - start), torch.cat(tokens, 1)

    result: dict[str, list[float]] = {"lean": [], "general": []}
    outputs = {}
    with torch.no_grad():
        run(True), run(False)  # warm-up: few_rows' timing, the allocator
        for i in range(rounds):
            for lean in (True, False) if i % 2 == 0 else (False, True):
                rate, outputs[lean] = run(lean)
                result["lean" if lean else "general"].append(rate)
    return {**result, "same_tokens": int(torch.equal(outputs[True], outputs[False]))}


# ----------------------------------------------------------------------------- driver
def save_checkpoint() -> None:
    """A random Qwen2.5-0.5B-shaped checkpoint in bf16, written by transformers, with a
    token-per-word tokenizer (the view of a checkpoint needs one; its ids do not matter)."""
    if not (CHECKPOINT / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, models, pre_tokenizers

        words = {"<unk>": 0, **{f"w{i}": i + 1 for i in range(255)}}
        tokenizer = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # type: ignore[assignment]
        CHECKPOINT.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(CHECKPOINT / "tokenizer.json"))
    if (CHECKPOINT / "model.safetensors").is_file():
        return
    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # initialize in bf16: no 2 GB fp32 copy
    config = transformers.AutoConfig.for_model(**QWEN_0_5B)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(CHECKPOINT)


def bench_memory(rounds: int) -> None:
    in_subprocess(__file__, THREADS, "save")
    weights = (CHECKPOINT / "model.safetensors").stat().st_size
    print(f"checkpoint {CHECKPOINT}: {mib(weights)} of bf16 weights (file size)")
    with tempfile.TemporaryDirectory() as cache:  # a view of its own, written afresh
        os.environ["HONE_CACHE_DIR"] = cache
        written = in_subprocess(__file__, THREADS, "memory", "hone-view-write")["write_peak"]
        print(
            f"   hone view: written once, peak +{mib(written)} ({written / weights:.2f}x weights)"
        )
        results: dict[str, list[dict[str, Any]]] = {"hone": [], "hone-view": [], "transformers": []}
        order = list(results)
        for i in range(rounds):
            for side in order if i % 2 == 0 else order[::-1]:
                results[side].append(in_subprocess(__file__, THREADS, "memory", side))
    for side, runs in results.items():
        load = statistics.median(r["load_peak"] for r in runs)
        fwd = statistics.median(r["forward_peak"] for r in runs)
        secs = statistics.median(r["seconds"] for r in runs)
        print(
            f"{side:>12}: baseline {mib(runs[0]['baseline'])}, load peak +{mib(load)} "
            f"({load / weights:.2f}x weights), after a forward +{mib(fwd)} "
            f"({fwd / weights:.2f}x), load {secs:.2f} s, {runs[0]['dtype']}"
        )


def bench_train(rounds: int, layers: int, parts: list[str]) -> None:
    tokens = 4 * 256
    if "memory" in parts:
        bench_train_memory(rounds)
    if "speed" in parts:
        bench_train_speed(rounds, layers, tokens)
    if "alone" in parts:
        bench_train_alone(rounds, tokens)


def bench_train_memory(rounds: int) -> None:
    # hone's sides in the environment `hone train` gives its training process (glibc's
    # malloc tunables: hone.glibc_malloc), hone-untuned without it; transformers as it runs,
    # and transformers-tuned in hone's environment
    results: dict[str, list[dict[str, Any]]] = {
        "hone": [], "hone-untuned": [], "hone-plain": [], "transformers": [],
        "transformers-tuned": [],
    }  # fmt: skip
    order = list(results)
    for i in range(rounds):
        for side in order if i % 2 == 0 else order[::-1]:
            tuned = side in ("hone", "hone-plain", "transformers-tuned")
            env = as_hone_trains() if tuned else None
            results[side].append(in_subprocess(__file__, THREADS, "train-memory", side, env=env))
    peaks = {side: statistics.median(r["peak"] for r in runs) for side, runs in results.items()}
    for side, runs in results.items():
        each = ", ".join(mib(r["peak"]) for r in runs)
        print(
            f"{side:>18}: peak RSS {mib(peaks[side])} ({each}; after imports "
            f"{mib(runs[0]['baseline'])}), {peaks[side] / peaks['transformers']:.2f}x transformers"
        )


def bench_train_speed(rounds: int, layers: int, tokens: int) -> None:
    r = in_subprocess(__file__, THREADS, "train-speed", str(rounds), str(layers))
    shape = f"{layers} layers" if layers else "all layers"
    for side in ("hone", "transformers", "matmul floor"):
        each = ", ".join(f"{tokens / x:.0f}" for x in r[side])
        best = tokens / min(r[side])
        print(f"{side:>12}: {best:.0f} tokens/s fastest step ({shape}; steps {each})")
    for side in ("hone", "matmul floor"):
        per_round = [t / h for h, t in zip(r[side], r["transformers"], strict=True)]
        fastest = min(r["transformers"]) / min(r[side])
        print(
            f"{side}/transformers speed: {fastest:.2f}x (fastest steps), per-round ratios "
            f"min {min(per_round):.2f}x median {statistics.median(per_round):.2f}x "
            f"max {max(per_round):.2f}x"
        )


def bench_train_alone(rounds: int, tokens: int) -> None:
    """Each side in a process of its own, as each trains (hone's trainer keeps freed memory),
    the processes alternated; the median step of each side, and of each pair of processes."""
    alone: dict[str, list[float]] = {"hone": [], "transformers": []}
    pairs: list[float] = []  # transformers' median step over hone's, round by round
    for i in range(rounds):
        this_round = {}
        for side in list(alone) if i % 2 == 0 else list(alone)[::-1]:
            env = as_hone_trains() if side == "hone" else None
            this_round[side] = in_subprocess(
                __file__, THREADS, "train-speed-alone", side, "3", env=env
            )["seconds"]
            alone[side] += this_round[side]
        pairs.append(
            statistics.median(this_round["transformers"]) / statistics.median(this_round["hone"])
        )
    medians = {side: statistics.median(seconds) for side, seconds in alone.items()}
    for side, median in medians.items():
        print(f"{side:>12}, a process each: {tokens / median:.0f} tokens/s (median step)")
    print(
        f"hone/transformers speed, a process each: "
        f"{medians['transformers'] / medians['hone']:.2f}x (median steps); per round "
        f"min {min(pairs):.2f}x median {statistics.median(pairs):.2f}x max {max(pairs):.2f}x"
    )


def bench_generate(rounds: int, prompt_tokens: int, new_tokens: int, precision: str) -> None:
    r = in_subprocess(
        __file__, THREADS, "generate", str(prompt_tokens), str(new_tokens), str(rounds),
        precision,
    )  # fmt: skip
    print(f"weights and compute in {precision}")
    for side in ("hone", "transformers", "matvec floor", "read floor"):
        rates = ", ".join(f"{x:.1f}" for x in r[side])
        print(f"{side:>12}: {statistics.median(r[side]):.1f} tokens/s (rounds {rates})")
    for side in ("hone", "matvec floor", "read floor"):
        ratio = statistics.median(h / t for h, t in zip(r[side], r["transformers"], strict=True))
        print(f"{side}/transformers: {ratio:.2f}x (median of per-round ratios)")
    print(f"same tokens: {bool(r['same_tokens'])}")


def bench_lean_decode(rounds: int, new_tokens: int, cases: list[str]) -> None:
    for case in cases:
        r = in_subprocess(__file__, THREADS, "lean-decode", case, str(rounds), str(new_tokens))
        ratio = statistics.median(a / b for a, b in zip(r["lean"], r["general"], strict=True))
        each = ", ".join(f"{x:.1f}" for x in r["lean"]), ", ".join(f"{x:.1f}" for x in r["general"])
        print(
            f"{case:>7}: lean {statistics.median(r['lean']):.1f} tokens/s ({each[0]}), general "
            f"{statistics.median(r['general']):.1f} ({each[1]}): {ratio:.2f}x (median of "
            f"per-round ratios), same tokens: {bool(r['same_tokens'])}"
        )


def main() -> None:
    if sys.argv[1:2] == ["_worker"]:
        kind, *args = sys.argv[2:]
        if kind == "save":
            save_checkpoint()
            result: dict[str, Any] = {}
        elif kind == "memory":
            result = worker_memory(args[0])
        elif kind == "train-memory":
            result = worker_train_memory(args[0], batch=4, tokens=256)
        elif kind == "lean-decode":
            result = worker_lean_decode(args[0], int(args[1]), int(args[2]))
        elif kind == "train-speed-alone":
            result = worker_train_speed_alone(args[0], int(args[1]))
        elif kind == "train-speed":
            seconds = worker_train_speed(int(args[0]), batch=4, tokens=256, layers=int(args[1]))
            result = dict(seconds)
        else:
            result = worker_generate(*map(int, args[:3]), *args[3:])
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=["memory", "train-step", "generate", "lean-decode"])
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    parser.add_argument(
        "--layers", type=int, default=0, help="train-step speed: blocks (0: all 30)"
    )
    parser.add_argument(
        "--parts", nargs="+", default=["memory", "speed", "alone"],
        choices=["memory", "speed", "alone"],
        help="train-step: peak memory, speed in one process, speed a process each",
    )  # fmt: skip
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--cases", nargs="+", default=["llama", "lora", "gpt2", "slots4", "slots8"],
        help="lean-decode: which models and batches",
    )  # fmt: skip
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"],
        help="generate: both sides' weights and compute (bf16: on a CPU with native bf16)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.bench == "memory":
        bench_memory(args.rounds)
    elif args.bench == "train-step":
        bench_train(args.rounds, args.layers, args.parts)
    elif args.bench == "lean-decode":
        bench_lean_decode(args.rounds, args.new_tokens, args.cases)
    else:
        bench_generate(args.rounds, args.prompt_tokens, args.new_tokens, args.precision)


if __name__ == "__main__":
    main()
