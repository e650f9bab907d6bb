"""The server: the global model, the rounds of Flower's strategy, and the run directory.

`FederatedRun` holds what the server owns: the global weights (initialized exactly as
`hone train` initializes its model), the held-out validation and test splits it evaluates
them on, the strategy, and a run directory like any hone run's: config.toml, metrics.jsonl
and TensorBoard per round, a checkpoint per completed round (checkpoints/step-000000R holds
round R: the global weights and the strategy's state), and at the end model.safetensors,
data.json and summary.json, which `hone eval`, `predict`, `sample` and `serve` load.

Each round asks the strategy to configure training (Flower samples the clients, with
Python's `random` seeded from (train.seed, round), so a resumed run samples the same ones),
sends the messages through the grid, and lets the strategy aggregate the replies; the
clients' training losses and label histograms come back in the replies.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from safetensors.torch import load_model, save_model
from torch import nn

from hone.checkpoint import (
    Checkpoint,
    CheckpointManager,
    check_resumable_change,
    refuse_pickles,
    truncate_metrics,
)
from hone.checkpoint.io import MODEL_FILE
from hone.config import Config, load_config
from hone.engine.parts import build_parts, context_length, data_info
from hone.engine.precision import Precision
from hone.engine.runtime import resolve_device, seed_everything
from hone.engine.tasks import evaluate
from hone.errors import ConfigError, UserError
from hone.federate import protocol as p
from hone.federate.partition import check_enough, histograms, partition_name
from hone.federate.strategies import build_strategy, load_strategy_state, strategy_state
from hone.metrics import direction, is_better
from hone.models import num_parameters
from hone.run_files import RunFiles
from hone.track.progress import ProgressBar
from hone.track.run import RunLog


class FederationFailed(UserError):
    """A round in which no client returned weights (every reply was an error)."""


class GlobalWeightsIO:
    """A checkpoint's model file: the global weights. The server has no optimizer of its
    own; a strategy's state travels with the checkpoint's other state."""

    def save(self, model: nn.Module, optimizer: object, folder: Path) -> None:
        save_model(model, str(folder / MODEL_FILE))

    def load(self, model: nn.Module, optimizer: object, folder: Path) -> None:
        missing, unexpected = load_model(model, str(folder / MODEL_FILE))
        assert not missing and not unexpected, (missing, unexpected)


class FederatedRun:
    """The server side of `hone federate`; `run(grid)` trains and returns the summary."""

    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool | str = False) -> None:
        """`resume`: False starts afresh (refused when run_dir has checkpoints); True
        continues from the last completed round; "auto" does so when there is one."""
        t = cfg.train
        self.cfg, self.files = cfg, RunFiles(run_dir)
        # As `hone train` starts: seed, build the data, then the model from the seeded RNG.
        seed_everything(t.seed, t.deterministic)
        self.device = resolve_device(t.device)
        parts = build_parts(cfg, self.device)
        self.data, self.task, self.spec = parts.data, parts.task, parts.spec
        self.model, self.loss_fn = parts.model, parts.eval_loss_fn
        # Refused here, before any client is asked: more clients than the data can feed.
        check_enough(self.data, cfg.federated.clients, cfg.model.context_length)
        self.precision = Precision.from_config(t.precision, self.device)
        self.strategy = build_strategy(cfg.federated)
        self.manager = CheckpointManager(
            self.files.checkpoints,
            keep_last=t.keep_last,
            keep_best=t.keep_best,
            monitor=t.monitor,
            mode=direction(t.monitor),
            io=GlobalWeightsIO(),
        )
        self.round = 0
        self.elapsed = 0.0  # seconds spent in rounds (training and aggregation)
        self.best: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.reports: dict[str, dict[str, Any]] = {}  # by client id: its partition's share
        self.train_loss = float("nan")  # the last round's, weighted as FedAvg weighs clients
        checkpoint = self._prepare(resume)
        purge_step = checkpoint.step + 1 if checkpoint is not None else None
        self.log = RunLog(self.files.root, cfg, True, cfg.log.tensorboard, purge_step)
        if checkpoint is not None:
            self._restore(checkpoint)

    # ----------------------------------------------------------------- resume
    def _prepare(self, resume: bool | str) -> Checkpoint | None:
        manager, root = self.manager, self.files.root
        manager.clean_partial()
        if resume is False:
            if manager.step_dirs():
                raise ConfigError(
                    f"run directory {root} already holds checkpoints; continue it with "
                    f"--resume {root} (or --resume auto), or set --run-dir to a new directory"
                )
            return None
        refuse_pickles(root, "run directory")
        checkpoint = manager.newest_valid()
        if checkpoint is None:
            if resume == "auto":
                truncate_metrics(root, 0)
                return None
            raise ConfigError(
                f"{root}/checkpoints holds no completed round to resume; start the run again "
                "without --resume"
            )
        if self.files.config.is_file():  # resuming exactly needs the settings it ran with
            check_resumable_change(load_config(str(self.files.config)), self.cfg)
        manager.drop_newer_than(checkpoint.step)
        truncate_metrics(root, checkpoint.manifest["metrics_bytes"])
        return checkpoint

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = self.manager.load(checkpoint, self.model, cast(torch.optim.Optimizer, None))
        self.round, self.elapsed = int(state["round"]), float(state["elapsed"])
        self.best, self.last, self.reports = state["best"], state["last"], state["reports"]
        load_strategy_state(self.strategy, state["strategy"])

    def _save(self) -> None:
        size = self.files.metrics.stat().st_size if self.files.metrics.exists() else 0
        state = {
            "round": self.round,
            "elapsed": self.elapsed,
            "best": self.best,
            "last": self.last,
            "reports": self.reports,
            "strategy": strategy_state(self.strategy),
        }
        monitor = self.last.get(self.cfg.train.monitor)
        self.manager.save(
            self.round,
            self.model,
            cast(torch.optim.Optimizer, None),
            state,
            monitor,
            {"metrics_bytes": size},
        )

    # ----------------------------------------------------------------- rounds
    def run(self, grid: Grid) -> dict[str, Any]:
        """Every round not yet completed, then the final artifacts; returns the summary."""
        bar = ProgressBar(self.cfg.federated.rounds, self.cfg.log.progress)
        try:
            for server_round in range(self.round + 1, self.cfg.federated.rounds + 1):
                self.train_round(grid, server_round)
                bar.update(server_round, self._progress())
            summary = self.finish()
        finally:
            bar.close()
            self.log.close()
        return summary

    def _progress(self) -> str:
        val = " ".join(f"{k} {v:.4f}" for k, v in self.last.items())
        return f"round {self.round}: train loss {self.train_loss:.4f} {val}"

    def train_round(self, grid: Grid, server_round: int) -> None:
        """One round: sample, train on the clients, aggregate, evaluate, checkpoint."""
        start = time.perf_counter()
        # Flower's strategies sample clients with the global `random`.
        random.seed(p.mix_seed(self.cfg.train.seed, server_round))
        arrays = ArrayRecord(self.model.state_dict())
        config = ConfigRecord({p.HONE_CONFIG: p.config_text(self.cfg)})
        messages = self.strategy.configure_train(server_round, arrays, config, grid)
        replies = list(grid.send_and_receive(messages))
        aggregated, _ = self.strategy.aggregate_train(server_round, replies)
        if aggregated is None:
            reasons = sorted({str(r.error.reason) for r in replies if r.has_error()})
            raise FederationFailed(
                f"round {server_round}: no client returned weights "
                f"({len(replies)} replies; {'; '.join(reasons) or 'none arrived'})"
            )
        self.model.load_state_dict(aggregated.to_torch_state_dict())
        self.round = server_round
        self.elapsed += time.perf_counter() - start
        self._log_clients(replies)
        metrics = self.evaluate_split("val")
        if metrics:
            self.last = metrics
            for key, value in metrics.items():
                if key not in self.best or is_better(key, value, self.best[key]):
                    self.best[key] = value
            event = {k[4:]: v for k, v in metrics.items()}
            self.log.log({"step": server_round, "split": "val", "round": server_round, **event})
        self._save()

    def _log_clients(self, replies: list[Message]) -> None:
        """The round's training losses (their mean weighted as FedAvg weighs, and each
        client's), and the partitions of clients heard from for the first time."""
        losses, weights, steps = {}, {}, 0
        for reply in replies:
            if reply.has_error():
                continue
            metrics = reply.content.metric_records[p.METRICS]
            info = reply.content.config_records[p.CLIENT_INFO]
            client = str(info[p.PARTITION_ID])
            losses[client] = float(cast(float, metrics[p.TRAIN_LOSS]))
            weights[client] = float(cast(float, metrics[p.NUM_EXAMPLES]))
            steps += int(cast(int, metrics[p.STEPS]))
            self.log.scalar(f"clients/train_loss/{client}", losses[client], self.round)
            if client not in self.reports:
                unit = "num_tokens" if self.task.name == "lm" else "num_samples"
                counts = [int(c) for c in cast(list[int], info[p.LABEL_COUNTS])]
                self.reports[client] = {
                    "client": int(client),
                    unit: int(weights[client]),
                    "label_counts": counts,
                }
                self.log.write_json(
                    self.files.partitions.name, histograms(self.cfg, self.data, self._by_id())
                )
        total = sum(weights.values())
        self.train_loss = sum(losses[c] * weights[c] for c in losses) / total
        event = {
            "step": self.round,
            "split": "train",
            "round": self.round,
            "loss": self.train_loss,
            "clients": len(losses),
            "client_steps": steps,
            "elapsed": round(self.elapsed, 4),
            "client_losses": losses,
        }
        self.log.log(event)

    def _by_id(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.reports.items()}

    # ----------------------------------------------------------------- evaluation
    def evaluate_split(self, split: str) -> dict[str, float]:
        """The global model's loss and metric on `split`, keys prefixed by the split."""
        if not self.task.has_split(self.data, split):
            return {}
        t = self.cfg.train
        batch_size = t.eval_batch_size if self.task.name != "lm" else t.batch_size
        batches = self.task.eval_batches(
            self.data, split, batch_size, context_length(self.spec), t.eval_batches
        )
        result = evaluate(
            self.model, batches, self.loss_fn, self.task, self.device, self.precision.autocast
        )
        return {f"{split}_{k}": v for k, v in result.items()}

    # ----------------------------------------------------------------- the end
    def finish(self) -> dict[str, Any]:
        """Test metrics, the global weights and what loading the run needs; the summary."""
        test = self.evaluate_split("test")
        if test:
            self.log.log(
                {"step": self.round, "split": "test", **{k[5:]: v for k, v in test.items()}}
            )
        save_model(self.model, str(self.files.model))
        if self.task.name == "lm":
            self.data.tokenizer.save(str(self.files.tokenizer))  # type: ignore[union-attr]
        self.log.write_json(self.files.data_info.name, data_info(self.data, self.spec))
        fed, metric = self.cfg.federated, self.task.metric
        summary = {
            "recipe": self.cfg.recipe,
            "rounds": self.round,
            "clients": fed.clients,
            "fraction": fed.fraction,
            "strategy": fed.strategy,
            "partition": partition_name(fed, self.data),
            "wall_seconds": round(self.elapsed, 3),
            "final_val_loss": self.last.get("val_loss"),
            "best_val_loss": self.best.get("val_loss"),
            "final_val_metric": self.last.get(f"val_{metric}"),
            "best_val_metric": self.best.get(f"val_{metric}"),
            "metric": metric,
            **test,
            "num_parameters": num_parameters(self.model),
            "device": str(self.device),
            "torch_version": torch.__version__,
            "seed": self.cfg.train.seed,
            "run_dir": str(self.files.root),
        }
        self.log.write_json(self.files.summary.name, summary)
        return summary
