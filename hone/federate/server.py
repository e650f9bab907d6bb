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

Around the rounds the run is like any other (hone.engine.shell's `RunShell`): a round is a
step, so status.json says running, finished or failed (and `hone runs` tells a killed run
from a live one), observers see the same hooks, `log.mlflow` mirrors it, and resume and best
values go through the trainer's own pieces.
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

from hone.checkpoint import Checkpoint, CheckpointManager, check_resumable_change
from hone.checkpoint.io import MODEL_FILE
from hone.config import Config, load_config
from hone.data.loaders import LoaderData
from hone.engine.checkpointing import resume_point
from hone.engine.loop_state import LoopState
from hone.engine.parts import build_parts
from hone.engine.precision import Precision
from hone.engine.runtime import resolve_device, seed_everything
from hone.engine.shell import ObserverChoice, RunShell
from hone.engine.tasks import evaluate
from hone.errors import UserError
from hone.federate import protocol as p
from hone.federate.partition import check_enough, histograms, partition_name
from hone.federate.strategies import build_strategy, load_strategy_state, strategy_state
from hone.metrics import direction
from hone.models import num_parameters
from hone.run_files import RunFiles


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

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        resume: bool | str = False,
        observers: ObserverChoice = None,
    ) -> None:
        """`resume`: False starts afresh (refused when run_dir has checkpoints); True
        continues from the last completed round; "auto" does so when there is one.
        `observers`: more observers after the defaults, or a function of the defaults that
        returns the list to use; their hooks are given this run (a round is a step)."""
        t = cfg.train
        self.cfg, self.files = cfg, RunFiles(run_dir)
        # As `hone train` starts: seed, build the data, then the model from the seeded RNG.
        seed_everything(t.seed, t.deterministic)
        self.device = resolve_device(t.device)
        parts = build_parts(cfg, self.device)
        assert not isinstance(parts.data, LoaderData)  # built from the config
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
        # A round is a step: state.step counts completed rounds, state.train_seconds the
        # seconds spent in them (training and aggregation); best and last validation values.
        self.state = LoopState()
        self.total_steps = cfg.federated.rounds
        # Observers read it; a federated run catches no stop signal (SIGTERM ends the process,
        # and a reader finds it killed), each completed round is a checkpoint to resume from.
        self.signal: int | None = None
        self.reports: dict[str, dict[str, Any]] = {}  # by client id: its partition's share
        self.train_loss = float("nan")  # the last round's, weighted as FedAvg weighs clients
        checkpoint = self._prepare(resume)
        purge_step = checkpoint.step + 1 if checkpoint is not None else None
        self.shell = RunShell(cfg, self.files.root, True, purge_step, self.state)
        self.log = self.shell.log
        self.observers = self.shell.observe(self, self.shell.default_observers(), observers)
        if checkpoint is not None:
            self._restore(checkpoint)

    @property
    def round(self) -> int:
        """The last completed round."""
        return self.state.step

    # ----------------------------------------------------------------- resume
    def _prepare(self, resume: bool | str) -> Checkpoint | None:
        """The round to resume from, picked as a trainer's checkpoint is (`resume_point`)."""
        if resume is not False and self.manager.step_dirs() and self.files.config.is_file():
            # Resuming exactly needs the settings it ran with (before anything is cut back).
            check_resumable_change(load_config(str(self.files.config)), self.cfg)
        return resume_point(self.files, self.manager, resume)

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = self.manager.load(checkpoint, self.model, cast(torch.optim.Optimizer, None))
        self.state.load_state_dict(state["loop"])
        self.reports = state["reports"]
        load_strategy_state(self.strategy, state["strategy"])
        for name, observer in self.observers.stateful().items():
            if name in state["observers"]:
                observer.load_state_dict(state["observers"][name])  # type: ignore[attr-defined]

    def _save(self) -> None:
        size = self.files.metrics.stat().st_size if self.files.metrics.exists() else 0
        state = {
            "loop": self.state.state_dict(),
            "reports": self.reports,
            "strategy": strategy_state(self.strategy),
            "observers": {
                name: observer.state_dict()  # type: ignore[attr-defined]
                for name, observer in self.observers.stateful().items()
            },
        }
        self.manager.save(
            self.round,
            self.model,
            cast(torch.optim.Optimizer, None),
            state,
            self.shell.monitor_value(),
            {"metrics_bytes": size},
        )

    # ----------------------------------------------------------------- rounds
    def run(self, grid: Grid) -> dict[str, Any]:
        """Every round not yet completed, then the final artifacts; returns the summary."""
        try:
            self.shell.start()  # status.json: running
            for server_round in range(self.round + 1, self.cfg.federated.rounds + 1):
                self.train_round(grid, server_round)
            summary = self.finish()
        finally:
            self.shell.close()  # on an error too: what was logged is complete on disk
        return summary

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
        self.state.step = server_round
        self.state.train_seconds += time.perf_counter() - start
        self._log_clients(replies)
        self.shell.validated(server_round, self.evaluate_split("val"), round=server_round)
        # The round's end is a step's: the status file's heartbeat, a user's observers.
        self.observers.call("on_step_end", self, torch.tensor(self.train_loss))
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
                unit = f"num_{self.task.data_unit}"
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
            "elapsed": round(self.state.train_seconds, 4),
            "client_losses": losses,
        }
        self.shell.emit(event)

    def _by_id(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.reports.items()}

    # ----------------------------------------------------------------- evaluation
    def evaluate_split(self, split: str) -> dict[str, float]:
        """The global model's loss and metric on `split`, keys prefixed by the split."""
        if not self.task.has_split(self.data, split):
            return {}
        t, task = self.cfg.train, self.task
        context = task.context_length(self.spec)
        batches = task.eval_batches(
            self.data, split, task.eval_batch_size(t), context, t.eval_batches
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
            self.shell.emit(
                {"step": self.round, "split": "test", **{k[5:]: v for k, v in test.items()}}
            )
        save_model(self.model, str(self.files.model))
        self.task.save_input_files(self.data, self.files)
        self.log.write_json(self.files.data_info.name, self.task.info(self.data, self.spec))
        fed = self.cfg.federated
        head = {
            "rounds": self.round,
            "clients": fed.clients,
            "fraction": fed.fraction,
            "strategy": fed.strategy,
            "partition": partition_name(fed, self.data),
        }
        summary = self.shell.summary(
            self.task.metric,
            test,
            head=head,
            num_parameters=num_parameters(self.model),
            device=self.device,
        )
        self.shell.write_summary(summary)
        self.shell.finished(summary)  # status.json: finished; MLflow: the artifacts
        return summary
