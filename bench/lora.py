"""LoRA fine-tuning (issue 27): hone against transformers + PEFT, and packing against padding.

Two benches, every measurement in a fresh subprocess (peak RSS is a process's own), 2 torch
threads, the sides alternating round by round; each prints its numbers and the ratios:

  peft     a training step (forward, backward, AdamW on the adapters) of a random model of
           SmolLM2-135M's config (written once by transformers' save_pretrained, fp32) at
           batch 4 x 256, rank-16 adapters (alpha 32, no dropout) on every linear layer but
           the head: hone (load_pretrained + the LoRA converter, the loss from the targets as
           the language task trains) against transformers + PEFT (get_peft_model, the loss
           from `labels`), in fp32 and under bf16 autocast. Tokens/s of the fastest step and
           peak RSS (VmHWM). hone's base in the dtype a run gives it by default (lora.base_dtype
           = auto: bf16 under bf16 autocast, fp32 otherwise); also hone with the base held in
           bf16 whatever the precision, in 4 bits (nf4, QLoRA's), with activation checkpointing
           (train.activation_checkpointing) and compiled (train.compile), as extra rows; and `matmul-floor`, the step's
           matmuls and attention alone on the same shapes (`lora_matmul_floor`): the ceiling
           of any LoRA implementation at that precision.
  summed   in fp32, a LoRA layer's training product with the update summed into the weight
           (hone.finetune.lora_product, what hone runs) against the update apart (x W^T +
           s (x A^T) B^T, PEFT's way and hone's before), in one process, alternated: each
           layer shape of SmolLM2-135M at batch 4 x 256 (forward and backward, medians of
           --rounds runs), then whole training steps of the bench's LoRA model (the apart
           formula patched in).
  packing  `hone train` on chat data (prompt/completion records of 20 to 256 tokens, spread
           uniformly or log-uniformly: --lengths; a word-level tokenizer, one token a
           word) from the same checkpoint, --batch rows of 256 a step, padded rows against
           packed ones (data.pack): the real tokens a second the run logs (padding not
           counted, hone.data.batching.ExampleBatcher.real_tokens).
  labelled in fp32, training steps of the bench's LoRA model on chat examples (the packing
           bench's lengths, uniform; the prompt's and the padding's targets ignored), in padded
           rows (one example a row) and packed rows (positions restarting), with only the
           labelled rows through the head (hone.models.lm_loss.labelled_rows, what hone runs)
           against every row (as before), in one process, alternated: medians of --rounds.

Run: `.venv/bin/python bench/lora.py peft|summed|packing|labelled [--rounds N] [--steps N] [--batch N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.workers import SMOLLM2_135M, as_hone_trains, in_subprocess, mib, rss_bytes  # noqa: E402

THREADS = 2
FOLDER = Path(os.environ.get("HONE_BENCH_DIR", "/tmp/hone-bench")) / "smollm2-135m-lora"
BATCH, TOKENS, RANK, ALPHA = 4, 256, 16, 32

WORDS = 2000  # the word-level tokenizer's vocabulary (the model's is larger: fine)


# ----------------------------------------------------------------------------- workers
def worker_save() -> dict[str, Any]:
    """The random checkpoint (fp32) with a word-level tokenizer, written once."""
    if (FOLDER / "model.safetensors").is_file():
        return {}
    import tokenizers
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**SMOLLM2_135M)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(FOLDER)
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(WORDS)}}
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    words.decoder = tokenizers.decoders.WordPiece()  # joins with spaces
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=words, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(FOLDER)
    return {}


def worker_step(side: str, precision: str, steps: int, extra: str) -> dict[str, Any]:
    """Tokens/s of the fastest of `steps` training steps (after one warm-up) and peak RSS."""
    import torch

    if side == "peft":
        import peft
        import transformers
    else:
        from hone.engine.allocator import freed_memory_kept
        from hone.finetune.frozen_base import base_reference
        from hone.finetune.lora import LoRA, adapter_parameters, base_dtype_for
        from hone.pretrained.weights import load_pretrained
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if side == "peft":
        base = transformers.AutoModelForCausalLM.from_pretrained(FOLDER, dtype=torch.float32)
        config = peft.LoraConfig(
            r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
            task_type="CAUSAL_LM",
        )  # fmt: skip
        model = peft.get_peft_model(base, config)
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        model, _, _ = load_pretrained(FOLDER)
        # the run's default (lora.base_dtype = auto: bf16 under bf16 autocast), or bf16, or
        # QLoRA's 4 bits (nf4: on a pretrained base, whose reference the run records)
        base_dtype = base_dtype_for("auto", precision)
        if extra.endswith("-base"):
            base_dtype = extra.removesuffix("-base")
        frozen_base = base_reference(str(FOLDER)) if base_dtype == "nf4" else None
        LoRA(RANK, ALPHA, 0.0, "all-linear", base_dtype, frozen_base).convert(model)
        model.activation_checkpointing = extra == "checkpointing"
        params = list(adapter_parameters(model).values())
    if extra == "floor":  # the matmuls alone, on hone's model's shapes
        step = lora_matmul_floor(model, precision)
    elif extra == "compiled":  # as the trainer compiles: the module its steps call
        step = training_step(side, CompiledModel(model), params, precision)
    else:
        step = training_step(side, model, params, precision)
    # hone's trainer keeps the memory a step frees while it trains (hone.engine.allocator);
    # transformers leaves malloc as it is
    held = contextlib.nullcontext() if side == "peft" else freed_memory_kept()
    times = []
    with held:
        step()  # warm-up: the allocator, the kernels, AdamW's state
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    # the fastest step: on a shared machine the slower ones measure the other jobs
    return {"tokens_per_second": BATCH * TOKENS / min(times), "peak": rss_bytes("VmHWM")}


class CompiledModel:
    """`model` called through torch.compile, as `train.compile = true` runs it."""

    def __init__(self, model: Any) -> None:
        import torch

        self.model, self.compiled = model, torch.compile(model)

    def train(self) -> None:
        self.model.train()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.compiled(*args, **kwargs)


def training_step(side: str, model: Any, params: list[Any], precision: str) -> Any:
    """A function running one training step of `side`'s model on random tokens."""
    import torch

    model.train()
    # fused on both sides: what hone's optim.impl = auto and transformers' Trainer (its
    # adamw_torch_fused default for torch >= 2.8) pick
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    data = torch.randint(0, SMOLLM2_135M["vocab_size"], (BATCH, TOKENS + 1))
    x, y = data[:, :-1], data[:, 1:]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> float:
        with autocast:
            if side == "peft":  # transformers shifts the labels itself
                loss = model(input_ids=x, labels=data[:, :-1]).loss
            else:  # the language task's path: the model takes the targets
                loss = model(x, targets=y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def lora_matmul_floor(model: Any, precision: str) -> Any:
    """A function running the matmuls any LoRA training step of `model` (rank RANK on its
    linear layers but the head) must, in `precision`'s compute dtype: each frozen layer's
    forward product and its input's gradient (the head's too, every token at once), each
    adapter's own (in fp32 the four skinny products of A's and B's gradients, the update
    summed into the weight's products as hone.finetune.lora_product does; in bf16, where
    that sum would round the update away, also the two forward products and the input's
    gradient through the adapter), and attention forward and backward (SDPA, causal).
    Nothing else (norms, SwiGLU, rotary positions, the loss, casts, the summed weights,
    autograd, Python): the ceiling of any implementation's tokens/s at this precision."""
    import torch
    import torch.nn.functional as F

    from hone.finetune.lora import lora_layers

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = BATCH * TOKENS
    adapters = list(lora_layers(model).values())
    frozen = [layer.weight.to(dtype) for layer in adapters] + [model.lm_head.weight.to(dtype)]
    a = [layer.lora_a.weight.to(dtype) for layer in adapters]
    b = [layer.lora_b.weight.to(dtype) for layer in adapters]
    sizes = {size for w in frozen for size in w.shape}
    inputs = {size: torch.randn(n, size, dtype=dtype) for size in sizes}
    h, gh = torch.randn(n, RANK, dtype=dtype), torch.randn(n, RANK, dtype=dtype)
    cfg = model.config
    H, G, D = cfg.n_head, cfg.kv_heads, cfg.head_width
    q = torch.randn(BATCH, H, TOKENS, D, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(BATCH, G, TOKENS, D, dtype=dtype, requires_grad=True) for _ in "kv")

    def step() -> None:
        with torch.no_grad():
            for w in frozen:  # forward, and the input's gradient
                F.linear(inputs[w.size(1)], w), inputs[w.size(0)] @ w
            for wa, wb in zip(a, b, strict=True):
                x, g = inputs[wa.size(1)], inputs[wb.size(0)]
                F.linear(x, wa), g @ wb, g.t() @ h, gh.t() @ x  # A's and B's gradients
                if dtype != torch.float32:  # the update apart from the weight
                    F.linear(h, wb), gh @ wa
        for _ in model.blocks:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=G != H)
            y.backward(torch.ones_like(y))

    return step


def update_apart(x: Any, weight: Any, bias: Any, a: Any, b: Any, scale: float) -> Any:
    """x W^T + b + scale (x A^T) B^T, the update beside the base's product (the addmm adds
    it without a scaled copy): what a LoRA layer computed in training before the sum."""
    import torch
    import torch.nn.functional as F

    y = F.linear(x, weight, bias)
    out = torch.addmm(
        y.reshape(-1, y.size(-1)), F.linear(x, a).reshape(-1, a.size(0)), b.t(), alpha=scale
    )
    return out.view(y.shape)


def worker_summed(rounds: int, steps: int) -> dict[str, Any]:
    """Median seconds of one LoRA layer's forward and backward per shape, and of whole
    training steps, summed against apart, alternated in this process."""
    import torch

    import hone.finetune.lora as lora
    from hone.engine.allocator import freed_memory_kept
    from hone.finetune.lora import LoRA, adapter_parameters
    from hone.finetune.lora_product import with_update
    from hone.pretrained.weights import load_pretrained

    torch.set_num_threads(THREADS)
    generator = torch.Generator().manual_seed(0)
    C, F_ = SMOLLM2_135M["hidden_size"], SMOLLM2_135M["intermediate_size"]
    kv = SMOLLM2_135M["num_key_value_heads"] * SMOLLM2_135M["head_dim"]
    shapes = {"q, o": (C, C), "k, v": (C, kv), "gate, up": (C, F_), "down": (F_, C)}
    kinds = {"summed": with_update, "apart": update_apart}
    layers: dict[str, dict[str, float]] = {}
    for name, (n_in, n_out) in shapes.items():
        w = torch.randn(n_out, n_in, generator=generator) * 0.02
        a = (torch.randn(RANK, n_in, generator=generator) * 0.02).requires_grad_()
        b = (torch.randn(n_out, RANK, generator=generator) * 0.02).requires_grad_()
        x = torch.randn(BATCH, TOKENS, n_in, generator=generator).requires_grad_()
        grad = torch.randn(BATCH, TOKENS, n_out, generator=generator)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(rounds * 10):
            for kind, product in kinds.items():
                start = time.perf_counter()
                product(x, w, None, a, b, ALPHA / RANK).backward(grad)
                times[kind].append(time.perf_counter() - start)
        layers[name] = {kind: statistics.median(t) for kind, t in times.items()}
    torch.manual_seed(0)
    model, _, _ = load_pretrained(FOLDER)
    LoRA(RANK, ALPHA, 0.0, "all-linear", "fp32").convert(model)
    step = training_step("hone", model, list(adapter_parameters(model).values()), "fp32")
    step_times: dict[str, list[float]] = {kind: [] for kind in kinds}
    # the name LoRALinear.forward calls: patched under another name, both sides would sum
    assert lora.with_update is with_update, "hone.finetune.lora no longer calls with_update"
    with freed_memory_kept():
        step()
        for _ in range(steps):
            for kind, product in kinds.items():
                lora.with_update = product  # what LoRALinear.forward calls while training
                start = time.perf_counter()
                step()
                step_times[kind].append(time.perf_counter() - start)
    lora.with_update = with_update
    steps_median = {kind: statistics.median(t) for kind, t in step_times.items()}
    return {"layers": layers, "steps": steps_median}


def chat_records(path: Path, count: int, lengths: str) -> None:
    """`count` prompt/completion records of 20 to 256 words (tokens) in all: uniformly
    (`uniform`), or log-uniformly (`long-tail`: as many of 20-40 tokens as of 128-256, the
    shape of most chat and instruction sets, many short answers and a few long ones)."""
    rng = random.Random(0)
    lines = []
    for _ in range(count):
        if lengths == "uniform":
            total = rng.randint(20, 255)  # + the EOS: at most 256 tokens
        else:
            total = min(255, int(math.exp(rng.uniform(math.log(20), math.log(256)))))
        prompt_words = rng.randint(1, total // 2)
        words = [f"w{rng.randrange(WORDS)}" for _ in range(total)]
        record = {
            "prompt": " ".join(words[:prompt_words]),
            "completion": " " + " ".join(words[prompt_words:]),
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def worker_packing(pack: str, steps: int, lengths: str, batch: int) -> dict[str, Any]:
    """`hone train` with padded or packed rows: the median of the real tokens/s it logs
    (the first step left out), and the share of padding in its rows."""
    import tempfile

    import hone
    from hone.track.run import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "chat.jsonl"
        chat_records(records, 400, lengths)
        overrides = [
            "model.name=pretrained", f"model.path={FOLDER}", f"model.block_size={TOKENS}",
            "data.name=chat", f"data.path={records}", "data.val_fraction=0",
            f"data.pack={pack}", "lora.enabled=true", f"lora.rank={RANK}", f"lora.alpha={ALPHA}",
            "lora.targets=all-linear", f"train.batch_size={batch}", f"train.max_steps={steps}",
            "train.max_epochs=0", "train.eval_every=0", "train.sample_tokens=0",
            "train.precision=fp32", f"train.threads={THREADS}", "log.every=1",
            "log.tensorboard=false", "log.progress=off", "log.stats_every=0",
        ]  # fmt: skip
        trainer = hone.Trainer(config=None, overrides=overrides, run_dir=Path(tmp) / "run")
        trainer.fit()
        events = read_metrics(Path(tmp) / "run")
        rates = [e["tokens_per_second"] for e in events if e["split"] == "train"]
        rows = trainer.data.train  # type: ignore[union-attr]  (the examples, unpacked)
    real = sum(r.shape[1] for r in rows)
    return {
        "tokens_per_second": statistics.median(rates[1:] or rates),
        "examples": len(rows),
        "mean_tokens": real / len(rows),
    }


def chat_rows(packed: bool, rows: int, rng: random.Random) -> tuple[Any, Any, Any]:
    """`rows` rows of TOKENS tokens of chat examples (chat_records' uniform lengths, random
    token ids): idx, targets (the prompt's and the padding's ignored) and positions (None for
    padded rows, one example a row; restarting at each example in packed rows)."""
    import torch

    idx = torch.zeros(rows, TOKENS, dtype=torch.long)
    targets = torch.full((rows, TOKENS), -100)
    positions = torch.zeros(rows, TOKENS, dtype=torch.long)
    for row in range(rows):
        at = 0
        while True:
            total = rng.randint(20, 255)
            if at + total > TOKENS:
                break
            prompt = rng.randint(1, total // 2)
            idx[row, at : at + total] = torch.randint(3, WORDS, (total,))
            # a target is the next token: the answer's, from the prompt's last token on
            targets[row, at + prompt - 1 : at + total - 1] = idx[row, at + prompt : at + total]
            positions[row, at : at + total] = torch.arange(total)
            at += total
            if not packed:
                break
        positions[row, at:] = torch.arange(TOKENS - at)  # the tail: padding
    return idx, targets, positions if packed else None


def worker_labelled(rounds: int, steps: int) -> dict[str, Any]:
    """Median seconds of a training step with only the labelled rows through the head and
    with every row, alternated, for padded and packed rows; and the labelled share."""
    import torch

    from hone.engine.allocator import freed_memory_kept
    from hone.finetune.lora import LoRA, adapter_parameters
    from hone.models import lm_loss
    from hone.pretrained.weights import load_pretrained

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model, _, _ = load_pretrained(FOLDER)
    LoRA(RANK, ALPHA, 0.0, "all-linear", "fp32").convert(model)
    model.train()
    optimizer = torch.optim.AdamW(list(adapter_parameters(model).values()), lr=1e-4, fused=True)
    labelled = lm_loss.labelled_rows

    def every_row(hidden: Any, targets: Any) -> tuple[Any, Any]:
        return hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)

    rng = random.Random(0)
    result: dict[str, Any] = {}
    for layout in ("padded", "packed"):
        batches = [chat_rows(layout == "packed", BATCH, rng) for _ in range(steps)]
        share = statistics.mean(float((t != -100).float().mean()) for _, t, _ in batches)
        times: dict[str, list[float]] = {"labelled": [], "every": []}
        with freed_memory_kept():
            for i in range(rounds + 1):  # the first round warms up, not counted
                for how in ("labelled", "every") if i % 2 == 0 else ("every", "labelled"):
                    lm_loss.labelled_rows = labelled if how == "labelled" else every_row
                    start = time.perf_counter()
                    for idx, targets, positions in batches:
                        model(idx, targets=targets, positions=positions).backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    if i:
                        times[how].append((time.perf_counter() - start) / len(batches))
        lm_loss.labelled_rows = labelled
        result[layout] = {"share": share, **{how: statistics.median(t) for how, t in times.items()}}
    return result


# ----------------------------------------------------------------------------- driver
SIDES = {
    "hone": ("hone", ""),
    "peft": ("peft", ""),
    "hone-bf16-base": ("hone", "bf16-base"),
    "hone-nf4-base": ("hone", "nf4-base"),
    "hone-checkpointing": ("hone", "checkpointing"),
    "matmul-floor": ("hone", "floor"),
    "hone-untuned": ("hone", "untuned"),  # without the environment `hone train` starts in
    "hone-compiled": ("hone", "compiled"),  # train.compile = true (one graph; minutes to compile)
}


def bench_peft(rounds: int, steps: int, precisions: list[str], names: list[str]) -> None:
    in_subprocess(__file__, THREADS, "save")
    sides = [SIDES[name] for name in names]
    for precision in precisions:
        results: dict[tuple[str, str], list[dict[str, Any]]] = {s: [] for s in sides}
        for i in range(rounds):
            for side, extra in sides if i % 2 == 0 else sides[::-1]:
                # hone's sides in the environment of `hone train`'s training process (glibc's
                # malloc tunables: hone.glibc_malloc); PEFT's as it runs
                tuned = side == "hone" and extra != "untuned"
                run = in_subprocess(
                    __file__, THREADS, "step", side, precision, str(steps), extra or "-",
                    env=as_hone_trains() if tuned else None,
                )  # fmt: skip
                results[(side, extra)].append(run)
                print(f"  {precision} {side} {extra}: {run}", flush=True)
        speed = {
            s: statistics.median(r["tokens_per_second"] for r in rs) for s, rs in results.items()
        }
        peak = {s: statistics.median(r["peak"] for r in rs) for s, rs in results.items()}
        theirs = ("peft", "")
        print(f"{precision}:")
        for s in sides:
            rates = ", ".join(f"{r['tokens_per_second']:.0f}" for r in results[s])
            name = " ".join(p for p in s if p)
            print(
                f"  {name:>20}: {speed[s]:.0f} tokens/s (rounds {rates}), peak RSS "
                f"{mib(peak[s])}; vs peft: speed {speed[s] / speed[theirs]:.2f}x, peak "
                f"{peak[s] / peak[theirs]:.2f}x"
            )


def bench_packing(rounds: int, steps: int, distributions: list[str], batch: int) -> None:
    in_subprocess(__file__, THREADS, "save")
    for lengths in distributions:
        results: dict[str, list[dict[str, Any]]] = {"false": [], "true": []}
        for i in range(rounds):
            for pack in ("false", "true") if i % 2 == 0 else ("true", "false"):
                run = in_subprocess(
                    __file__, THREADS, "packing", pack, str(steps), lengths, str(batch),
                    env=as_hone_trains(),  # as `hone train` runs
                )  # fmt: skip
                results[pack].append(run)
                print(f"  {lengths} pack={pack}: {run}", flush=True)
        speed = {
            p: statistics.median(r["tokens_per_second"] for r in rs) for p, rs in results.items()
        }
        for pack, runs in results.items():
            print(
                f"{lengths} pack={pack}: {speed[pack]:.0f} real tokens/s ({runs[0]['examples']} "
                f"examples of {runs[0]['mean_tokens']:.0f} tokens on average)"
            )
        print(
            f"{lengths}, {batch} rows a step: packed / padded: {speed['true'] / speed['false']:.2f}x real tokens/s"
        )


def bench_labelled(rounds: int, steps: int) -> None:
    in_subprocess(__file__, THREADS, "save")
    run = in_subprocess(
        __file__, THREADS, "labelled", str(rounds), str(steps), env=as_hone_trains()
    )
    print(f"fp32, batch {BATCH} x {TOKENS}, rank {RANK}, a training step (medians of {rounds}):")
    for layout, r in run.items():
        print(
            f"  {layout}: {r['share']:.0%} of the targets labelled; labelled rows through the "
            f"head {r['labelled']:.2f} s, every row {r['every']:.2f} s: "
            f"{r['every'] / r['labelled']:.2f}x the tokens/s"
        )


def bench_summed(rounds: int, steps: int) -> None:
    in_subprocess(__file__, THREADS, "save")
    run = in_subprocess(__file__, THREADS, "summed", str(rounds), str(steps))
    block = {"summed": 0.0, "apart": 0.0}
    count = {"q, o": 2, "k, v": 2, "gate, up": 2, "down": 1}  # layers of a block
    print("fp32, batch 4 x 256, rank 16, forward + backward of one layer (medians):")
    for name, times in run["layers"].items():
        print(
            f"  {name:>9}: summed {times['summed'] * 1e3:.1f} ms, apart {times['apart'] * 1e3:.1f} ms"
        )
        for kind in block:
            block[kind] += count[name] * times[kind]
    print(
        f"  a block's 7 layers: summed {block['summed'] * 1e3:.0f} ms, apart {block['apart'] * 1e3:.0f} ms"
    )
    summed, apart = run["steps"]["summed"], run["steps"]["apart"]
    print(
        f"training step of the LoRA model (median of {steps} each, alternated): summed "
        f"{summed:.2f} s, apart {apart:.2f} s: {apart / summed:.2f}x the tokens/s"
    )


def main() -> None:
    if sys.argv[1:2] == ["_worker"]:
        kind, *args = sys.argv[2:]
        if kind == "save":
            result = worker_save()
        elif kind == "step":
            side, precision, steps, extra = args
            result = worker_step(side, precision, int(steps), "" if extra == "-" else extra)
        elif kind == "summed":
            result = worker_summed(int(args[0]), int(args[1]))
        elif kind == "labelled":
            result = worker_labelled(int(args[0]), int(args[1]))
        else:
            result = worker_packing(args[0], int(args[1]), args[2], int(args[3]))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=["peft", "summed", "packing", "labelled"])
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the sides")
    parser.add_argument("--steps", type=int, default=2, help="timed steps a run")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument(
        "--sides", nargs="+", default=list(SIDES), choices=list(SIDES), help="peft: what runs"
    )
    parser.add_argument(
        "--lengths",
        nargs="+",
        default=["uniform", "long-tail"],
        choices=["uniform", "long-tail"],
        help="packing: how the examples' lengths spread over 20-256 tokens",
    )
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="packing: rows of 256 tokens a step"
    )
    args = parser.parse_args()
    if args.bench == "peft":
        bench_peft(args.rounds, args.steps, args.precision, args.sides)
    elif args.bench == "summed":
        bench_summed(args.rounds, args.steps)
    elif args.bench == "labelled":
        bench_labelled(args.rounds, args.steps)
    else:
        bench_packing(args.rounds, args.steps, args.lengths, args.batch)


if __name__ == "__main__":
    main()
