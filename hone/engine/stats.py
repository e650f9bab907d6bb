"""Training statistics: the evidence `hone doctor` reads to tell a sick run from a healthy one.

At the first step (the initialization) and every `log.stats_every` steps after it, the
`TrainingStats` observer records per layer, in forward order: gradient norm, weight norm,
update/weight ratio (how far the optimizer moved the weights, relative to their size),
activation mean and std, the fraction of ReLU-like units inactive on the whole batch and the
fraction of sigmoid/tanh pre-activations in the flat region. Once per run it records the loss
at step 0 against the loss of a uniform prediction and the scale of the training inputs.
Records go to stats.jsonl (one JSON object a line); every 20th also to TensorBoard as
per-layer scalars, every 100th (and the first) with weight and gradient histograms. Between stats steps the observer costs one list append per step:
the step's loss stays on the device until the next record (no host sync).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hone.checkpoint.faults import local_shard
from hone.engine.baselines import input_scale, uniform_loss, zero_loss
from hone.engine.observers import Observer
from hone.track.run import RunLog

if TYPE_CHECKING:
    from hone.engine.trainer import Trainer

# A unit of these is inactive on a sample when its pre-activation is <= 0 (for ReLU: output
# exactly 0, no gradient); a unit inactive on every sample of the batch is dead there.
RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish)
# Pre-activations beyond which the derivative is under 5% of its maximum: tanh' < 0.05 for
# |x| > 2.18, sigmoid' < 0.0125 for |x| > 4.36.
SATURATION = {nn.Tanh: 2.18, nn.Sigmoid: 4.36, nn.Hardtanh: 1.0, nn.Hardsigmoid: 3.0}
# Records between TensorBoard writes: per-layer scalars, and weight/gradient histograms (a
# GPT's histograms cost 160 ms, more than 20 records).
SCALARS_EVERY, HISTOGRAMS_EVERY = 20, 100
RECORD_KINDS = ("run", "layers", "non_finite")


def _units(t: torch.Tensor) -> torch.Tensor:
    """(samples, units): channels of images (B, C, H, W), the last dim otherwise."""
    if t.ndim == 4:
        return t.transpose(0, 1).flatten(1).T
    return t.reshape(-1, t.shape[-1]) if t.ndim > 1 else t.reshape(-1, 1)


class _Layer:
    """One tracked module: its parameters and, on a stats step, its activation sums."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module, self.type = name, module, type(module).__name__
        self.params = [local_shard(p) for p in module.parameters(recurse=False)]
        self.relu_like = isinstance(module, RELU_LIKE)
        self.threshold = next((v for k, v in SATURATION.items() if isinstance(module, k)), None)
        self.reset()

    def reset(self) -> None:
        self.elements = 0
        self.sums: torch.Tensor | None = None  # [sum, sum of squares, saturated count]
        self.alive: torch.Tensor | None = None  # units active on some sample

    @torch.no_grad()
    def observe(self, inputs: tuple[Any, ...], output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return
        out = out.detach().float()
        pre = inputs[0].detach().float() if inputs and isinstance(inputs[0], torch.Tensor) else out
        saturated = (
            (pre.abs() > self.threshold).sum() if self.threshold is not None else out.new_zeros(())
        )
        sums = torch.stack([out.sum(), (out * out).sum(), saturated.float()])
        self.sums = sums if self.sums is None else self.sums + sums
        self.elements += out.numel()
        if self.relu_like and pre.ndim >= 2:
            alive = (_units(pre) > 0).any(0)
            self.alive = alive if self.alive is None else self.alive | alive

    def activation_tensor(self) -> torch.Tensor:
        """[sum, sum of squares, saturated, dead fraction] of this step's forward passes."""
        assert self.sums is not None
        dead = (
            1.0 - self.alive.float().mean() if self.alive is not None else self.sums.new_zeros(())
        )
        return torch.cat([self.sums, dead.reshape(1)])

    def activations(self, values: list[float]) -> dict[str, float]:
        """Activation mean/std (and dead/saturated fractions) from `activation_tensor`'s values."""
        total, squares, saturated, dead = values
        n = self.elements
        mean = total / n
        result = {"act_mean": mean, "act_std": math.sqrt(max(squares / n - mean * mean, 0.0))}
        if self.alive is not None:
            result["dead_fraction"] = dead
        if self.threshold is not None:
            result["saturated_fraction"] = saturated / n
        return result


def _norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of each tensor, as one float32 vector (one fused kernel where torch has it)."""
    if not tensors:
        return torch.zeros(0)
    return torch.stack([n.float() for n in torch._foreach_norm(list(tensors))])


class StatsFile:
    """stats.jsonl, appended one record a line (line-buffered: a killed run keeps its
    records); a resumed run first drops the records of the steps it will redo."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def open(self, resumed_step: int) -> None:
        if self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if _step(line) <= resumed_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        assert record["kind"] in RECORD_KINDS, record["kind"]
        if self._file is None:  # a record outside the run (the NaN probe of a closed run)
            self.open(10**18)
        self._file.write(json.dumps(record, allow_nan=False, default=_finite) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _finite(value: Any) -> Any:
    raise TypeError(f"not JSON: {value!r}")


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except ValueError:  # a line cut short by a kill
        return 1 << 62


def clean(value: float) -> float | str:
    """JSON has no NaN/inf: they are written as strings ("nan", "inf")."""
    return value if math.isfinite(value) else str(value)


class TrainingStats(Observer):
    """Records the statistics above every `every` steps (and at the first) to stats.jsonl."""

    def __init__(self, every: int, file: StatsFile, log: RunLog) -> None:
        assert every > 0
        self.every, self.log, self.file = every, log, file
        self.layers: list[_Layer] = []
        self.losses: list[torch.Tensor] = []  # per-step losses since the last record (device)
        self.due = False
        self.records = 0
        self._hooks: list[Any] = []
        self._before: list[torch.Tensor] = []  # weights before a stats step
        self._grad_norms = torch.zeros(0)  # per-parameter gradient norms of a stats step
        self._grads_per_layer: list[int] = []
        self._grad_copies: list[torch.Tensor | None] = []
        self._order: list[_Layer] = []
        self._first_step = 0
        self._watch_from = 0  # the first step that may need the observer (a stats step - 1)
        self._lr = 0.0
        self.before_due = self.captured = False
        self._prev_grad: torch.Tensor | None = None
        self._cosine: torch.Tensor | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.file.open(trainer.state.step)
        self._first_step = trainer.state.step + 1
        self._watch_from = 0
        leaves = [(n, m) for n, m in trainer.model.named_modules() if not any(m.children())]
        self.layers = [
            _Layer(name or type(m).__name__, m)
            for name, m in leaves
            if any(True for _ in m.parameters(recurse=False))
            or isinstance(m, RELU_LIKE + tuple(SATURATION))
        ]
        # Under torch.compile a hook added later forces a recompile: no activation figures.
        self.hook_activations = not trainer.cfg.train.compile

    def on_step_start(self, trainer: Trainer, batches: list[Any]) -> None:
        step = trainer.state.step + 1
        if step < self._watch_from:  # the common case: nothing to do until the next record
            return
        # The step before a stats step keeps its gradient: the cosine between consecutive
        # gradients tells noise (about 0) from oscillation across a valley (negative).
        self.before_due = self.every > 1 and (step + 1) % self.every == 0
        self.due = step == self._first_step or step % self.every == 0
        self.captured = False
        if not self.due:
            return
        self._watch_from = (step // self.every + 1) * self.every - 1
        self._before = [p.detach().clone() for layer in self.layers for p in layer.params]
        self._lr = float(trainer.optimizer.param_groups[0]["lr"])  # the lr of this step
        self._order = []
        for layer in self.layers:
            layer.reset()
            if self.hook_activations:
                self._hooks.append(layer.module.register_forward_hook(self._hook(layer)))

    def _hook(self, layer: _Layer) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if layer not in self._order:
                self._order.append(layer)
            layer.observe(inputs, output)

        return hook

    def on_after_backward(self, trainer: Trainer) -> None:
        if self.due or self.before_due:
            self._capture(trainer)

    def _capture(self, trainer: Trainer) -> None:
        """This step's gradients: per-layer norms on a stats step, a flat copy the step before.
        Optimizers stepping through a closure (L-BFGS, Newton) call no after-backward hook:
        their last closure's gradients are read at the step's end."""
        self.captured = True
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        scaler = trainer.precision.scaler
        inv_scale = 1.0 / float(scaler.get_scale()) if scaler is not None else 1.0
        grads = [
            [local_shard(p.grad) for p in layer.params if p.grad is not None]
            for layer in self.layers
        ]
        flat = [g.flatten().float() for layer_grads in grads for g in layer_grads]
        if not self.due:  # the step before a stats step
            self._prev_grad = torch.cat(flat) if flat else None
            return
        self._cosine = None
        if flat and self._prev_grad is not None and self._prev_grad.numel() == sum(map(len, flat)):
            now = torch.cat(flat)
            self._cosine = torch.nn.functional.cosine_similarity(now, self._prev_grad, dim=0)
        self._prev_grad = None
        histograms = self.records % HISTOGRAMS_EVERY == 0 and self.log.has_tensorboard
        all_grads = [g for layer_grads in grads for g in layer_grads]
        self._grad_norms = _norms(all_grads) * inv_scale  # per parameter
        self._grads_per_layer = [len(g) for g in grads]
        self._grad_copies = [
            torch.cat([_strided(x) for x in g]).float() * inv_scale if histograms and g else None
            for g in grads
        ]

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.losses.append(loss)
        if (self.due or self.before_due) and not self.captured:
            self._capture(trainer)
        if not self.due:
            return
        self.due = False
        losses = [float(x) for x in torch.stack(self.losses).float().cpu()]
        self.losses = []
        step = trainer.state.step
        if step == 1 and self._first_step == 1:
            self.file.write(self._run_record(trainer, losses[0]))
        self.file.write(self._layers_record(step, losses))
        self.records += 1

    def _run_record(self, trainer: Trainer, initial_loss: float) -> dict[str, Any]:
        return {
            "step": 0,
            "kind": "run",
            "task": trainer.task.name,
            "loss_name": trainer.cfg.loss.name,
            "num_outputs": int(trainer.spec.num_outputs),
            "initial_loss": clean(initial_loss),
            "uniform_loss": uniform_loss(trainer),
            "zero_loss": zero_loss(trainer),
            "input_scale": input_scale(trainer),
            "num_layers": len(self.layers),
        }

    def _layers_record(self, step: int, losses: list[float]) -> dict[str, Any]:
        after = [p.detach() for layer in self.layers for p in layer.params]
        deltas = torch._foreach_sub(after, self._before)
        hooked = [layer for layer in self._order if layer.sums is not None]
        # Every number of the record in one transfer from the device.
        parts = [_norms(self._before), _norms(deltas), _norms(after), self._grad_norms.float()]
        if hooked:
            parts.append(torch.cat([layer.activation_tensor().float() for layer in hooked]))
        if self._cosine is not None:
            parts.append(self._cosine.float().reshape(1))
        values = torch.cat([t.reshape(-1).cpu() for t in parts]).tolist()
        n = len(after)
        before_n, delta_n, after_n = values[:n], values[n : 2 * n], values[2 * n : 3 * n]
        grad_n = values[3 * n : 3 * n + len(self._grad_norms)]
        rest = values[3 * n + len(self._grad_norms) :]
        activations = {
            id(layer): layer.activations(rest[4 * i : 4 * i + 4]) for i, layer in enumerate(hooked)
        }
        cosine = rest[-1] if self._cosine is not None else None
        rows, param_at, grad_at = {}, 0, 0
        for layer, with_grad in zip(
            self.layers, self._grads_per_layer or [0] * len(self.layers), strict=True
        ):
            row: dict[str, Any] = {"name": layer.name, "type": layer.type}
            k = len(layer.params)
            if k:
                weight_norm = math.sqrt(sum(x * x for x in before_n[param_at : param_at + k]))
                moved = math.sqrt(sum(x * x for x in delta_n[param_at : param_at + k]))
                grads = grad_n[grad_at : grad_at + with_grad]
                row["grad_norm"] = clean(math.sqrt(sum(x * x for x in grads)))
                row["weight_norm"] = weight_norm
                row["update_ratio"] = moved / weight_norm if weight_norm else None
            row.update({key: clean(v) for key, v in activations.get(id(layer), {}).items()})
            rows[id(layer)] = row
            param_at, grad_at = param_at + k, grad_at + with_grad
        order = self._order + [layer for layer in self.layers if layer not in self._order]
        ordered = [rows[id(layer)] for layer in order]
        with_grads = [
            r for r in ordered if isinstance(r.get("grad_norm"), float) and r["grad_norm"] > 0
        ]
        weights_before = math.sqrt(sum(x * x for x in before_n))
        record: dict[str, Any] = {
            "step": step,
            "kind": "layers",
            "loss": clean(losses[-1]),
            "lr": self._lr,
            "losses": [clean(x) for x in losses],
            "grad_norm": clean(math.sqrt(sum(x * x for x in grad_n))),
            "weight_norm": math.sqrt(sum(x * x for x in after_n)),
            "update_ratio": math.sqrt(sum(x * x for x in delta_n)) / max(weights_before, 1e-30),
            "first_last_grad_ratio": (
                with_grads[0]["grad_norm"] / with_grads[-1]["grad_norm"]
                if len(with_grads) >= 2
                else None
            ),
            "grad_cosine": clean(cosine) if cosine is not None else None,
            "layers": ordered,
        }
        if self.records % SCALARS_EVERY == 0:
            self._tensorboard(step, ordered, self.records % HISTOGRAMS_EVERY == 0)
        self._before = []
        return record

    def _tensorboard(self, step: int, rows: list[dict[str, Any]], histograms: bool) -> None:
        for row in rows:
            for key in ("grad_norm", "update_ratio", "dead_fraction", "saturated_fraction"):
                if isinstance(row.get(key), float):
                    self.log.scalar(f"stats/{key}/{row['name']}", row[key], step)
        for layer, grads in zip(self.layers, self._grad_copies, strict=False):
            if layer.params and histograms:
                weights = torch.cat([_strided(p.detach()).float() for p in layer.params])
                self.log.histogram(f"weights/{layer.name}", weights.cpu(), step)
            if grads is not None:
                self.log.histogram(f"gradients/{layer.name}", grads.cpu(), step)


def _strided(values: torch.Tensor, most: int = 4096) -> torch.Tensor:
    """At most `most` evenly strided values of a tensor: the shape of its histogram without
    copying and binning all of them (a GPT's full histograms took 160 ms a write)."""
    flat = values.reshape(-1)
    return flat[:: max(1, flat.numel() // most)]

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.file.close()
