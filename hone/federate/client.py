"""The client: a Flower ClientApp that trains the global model on its own partition with
hone's Trainer, one round at a time.

A round is a slice of one long run: a client's round r takes steps (r - 1) * K to r * K
of a trainer whose bounds span all rounds (K = federated.local_steps, or local_epochs times
the client's steps per epoch), so the lr schedule decays over the whole federation and the
client walks through its data epoch after epoch, whichever rounds it was sampled in. Both
are functions of the round alone: a client keeps no state between rounds, and a run resumed
on the server continues every client exactly. The global weights are loaded into the
trainer's model; the optimizer starts afresh each round, as in FedAvg (McMahan et al.).

Round 1 of client 0 is `hone train` itself: the trainer seeds and builds its model as any
run does before the global weights (built the same way on the server) are loaded, so one
client holding all the data takes exactly the steps of `hone train` (a test checks it).
Later rounds reseed the global RNGs (dropout) from (seed, client, round).
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from hone.config import Config
from hone.data import TensorBatcher, build_data
from hone.data.base import Data
from hone.engine import Observer, Trainer
from hone.engine.runtime import seed_everything
from hone.errors import ConfigError
from hone.federate import protocol as p
from hone.federate.partition import Partitioning, client_data, partition
from hone.federate.proximal import ProximalLoss
from hone.losses import build_loss


@dataclass
class RoundResult:
    """What a client sends back after a round."""

    state: dict[str, torch.Tensor]  # its weights after the round
    num_examples: int  # its training samples (tokens for a language model): FedAvg's weight
    train_loss: float  # mean training loss over the round's steps
    steps: int
    skipped_steps: int  # non-finite steps the NaN guard skipped
    label_counts: list[int]


class RoundLosses(Observer):
    """Sums the losses of a round's good steps and counts the skipped ones."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.steps = self.skipped = 0

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.total = loss.detach() if self.total is None else self.total + loss.detach()
        self.steps += 1

    def on_non_finite(self, trainer: Trainer, batches: Any) -> None:
        self.skipped += 1

    @property
    def mean(self) -> float:
        return float(self.total.item() / self.steps) if self.total is not None else float("nan")


@functools.lru_cache(maxsize=2)
def _partitioned(text: str, num_clients: int) -> tuple[Data, Partitioning]:
    """The data and its partitioning, built once per process for a config (in-process
    simulation runs every client in one process)."""
    cfg = p.config_from_text(text)
    data = build_data(cfg)
    return data, partition(cfg, data, num_clients)


def local_config(cfg: Config, client: int, num_samples: int) -> Config:
    """The client's trainer config: bounds spanning every round, no evaluation (a client has
    no validation split), scratch logging, and its own seed for the data order."""
    fed, t = cfg.federated, cfg.train
    batch_size = t.batch_size
    if num_samples < batch_size:  # a small partition trains on all it has, in one batch
        batch_size = num_samples - num_samples % t.grad_accum
        if batch_size < 1:
            raise ConfigError(
                f"client {client} holds {num_samples} samples, fewer than train.grad_accum "
                f"({t.grad_accum}); lower --train.grad_accum or --federated.clients"
            )
    rounds = fed.rounds
    train = dataclasses.replace(
        t,
        seed=t.seed + client,
        max_steps=rounds * fed.local_steps if fed.local_steps else 0,
        max_epochs=0 if fed.local_steps else rounds * fed.local_epochs,
        max_seconds=0.0,
        batch_size=batch_size,
        eval_every=0,
        patience=0,
    )
    train.checkpoint_every, train.profile = 0, False  # keys of the trainer's parts
    # A client's files are scratch: its losses travel to the server, which logs them.
    log = dataclasses.replace(
        cfg.log, progress="off", tensorboard=False, stats_every=0, mlflow=False
    )
    return dataclasses.replace(cfg, train=train, log=log)


def steps_per_round(cfg: Config, steps_per_epoch: int) -> int:
    fed = cfg.federated
    return fed.local_steps or fed.local_epochs * steps_per_epoch


def seek(trainer: Trainer, step: int) -> None:
    """Put a fresh trainer at `step` of its run: loop counter, data order and lr, as if it
    had taken every step before (its weights are the caller's to load)."""
    trainer.state.step = step
    batcher = trainer.batcher
    if isinstance(batcher, TensorBatcher):  # shuffled mini-batches: an epoch and a place
        spe = batcher.steps_per_epoch
        batcher.load_state_dict({"epoch": step // spe, "position": step % spe})
    else:  # token windows and full batches count steps
        batcher.load_state_dict({"step": step})
    schedule = trainer.schedule
    # LambdaLR's lr at `step` is its closed form: base lr times the schedule's factor.
    factors = schedule.lr_lambdas  # type: ignore[attr-defined]
    lrs = [base * f(step) for base, f in zip(schedule.base_lrs, factors, strict=True)]
    for group, lr in zip(trainer.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    state = schedule.state_dict()
    state.update(last_epoch=step, _last_lr=lrs)
    schedule.load_state_dict(state)


def train_round(
    cfg: Config,
    client: int,
    num_clients: int,
    server_round: int,
    global_state: dict[str, torch.Tensor],
    proximal_mu: float = 0.0,
) -> RoundResult:
    """Train the global weights on client `client`'s partition for round `server_round`."""
    if not 0 <= client < num_clients:
        raise ConfigError(
            f"partition-id must be in [0, {num_clients}), got {client}; start the SuperNode "
            "with --node-config 'partition-id=I num-partitions=N'"
        )
    data, parts = _partitioned(p.config_text(cfg), num_clients)
    rows = parts.indices[client]
    local = local_config(cfg, client, len(rows))
    loss = ProximalLoss(build_loss(cfg.loss, data.task), proximal_mu) if proximal_mu else None
    losses = RoundLosses()
    with tempfile.TemporaryDirectory(prefix="hone-client-") as scratch:
        trainer = Trainer(
            config=local,
            run_dir=scratch,
            data=client_data(data, rows),
            loss=loss,
            observers=[losses],
        )
        try:
            trainer.model.load_state_dict(global_state)
            if loss is not None:
                loss.anchor(trainer.model)
            steps = steps_per_round(local, trainer.batcher.steps_per_epoch)
            start = (server_round - 1) * steps
            seek(trainer, start)
            if server_round > 1:
                seed_everything(p.mix_seed(cfg.train.seed, client, server_round), False)
            trainer.run(until=start + steps)
        finally:
            trainer.close()
    state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    return RoundResult(
        state, len(rows), losses.mean, losses.steps, losses.skipped, parts.label_counts[client]
    )


def _node_int(context: Context, key: str, default: int | None = None) -> int:
    value = context.node_config.get(key, default)
    if value is None:
        raise ConfigError(
            f"this SuperNode has no {key} in its node config; start it with "
            "--node-config 'partition-id=I num-partitions=N'"
        )
    return int(value)  # type: ignore[arg-type]


client_app = ClientApp()


@client_app.train()
def train(message: Message, context: Context) -> Message:
    """Flower's entry point: one round of training on this node's partition."""
    config = message.content.config_records[p.CONFIG]
    cfg = p.config_from_text(str(config[p.HONE_CONFIG]))
    client = _node_int(context, p.PARTITION_ID)
    num_clients = _node_int(context, p.NUM_PARTITIONS, cfg.federated.clients)
    result = train_round(
        cfg,
        client,
        num_clients,
        int(config[p.SERVER_ROUND]),  # type: ignore[arg-type]
        message.content.array_records[p.ARRAYS].to_torch_state_dict(),
        float(config.get(p.PROXIMAL_MU, 0.0)),  # type: ignore[arg-type]
    )
    metrics = MetricRecord(
        {
            p.NUM_EXAMPLES: result.num_examples,
            p.TRAIN_LOSS: result.train_loss,
            p.STEPS: result.steps,
            p.SKIPPED_STEPS: result.skipped_steps,
        }
    )
    info = ConfigRecord(
        {
            p.PARTITION_ID: client,
            p.NUM_PARTITIONS: num_clients,
            p.LABEL_COUNTS: result.label_counts,
        }
    )
    content = RecordDict(
        {p.ARRAYS: ArrayRecord(result.state), p.METRICS: metrics, p.CLIENT_INFO: info}
    )
    return Message(content=content, reply_to=message)
