"""The `[federated]` table: clients, rounds, the Flower strategy and how the data is divided.

Registered with hone.config by name, so the config tree holds it as `cfg.federated` while
`hone federate` owns it; this module imports nothing but the config helpers (no Flower).
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.config.components import register_section
from hone.config.fields import opt


@register_section("federated")
@dataclass
class FederatedConfig:
    """`hone federate`: one model trained across clients whose data never leaves them."""

    clients: int = opt(10, "clients taking part (simulated ones, or SuperNodes to wait for)", ge=1)
    rounds: int = opt(20, "federated rounds: clients train, the server aggregates", ge=1)
    fraction: float = opt(1.0, "fraction of the clients sampled to train each round", gt=0, le=1)
    local_steps: int = opt(
        0, "optimizer steps each sampled client takes per round (0: use local_epochs)", ge=0
    )
    local_epochs: int = opt(
        1, "epochs over its own data each sampled client trains per round (local_steps = 0)", ge=1
    )
    strategy: str = opt(
        "fedavg",
        "Flower strategy: fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad, fedmedian, "
        "fedtrimmedavg",
    )
    proximal_mu: float = opt(
        0.01, "fedprox: weight mu of the proximal term mu/2 ||w - w_global||^2", ge=0
    )
    server_lr: float = opt(
        0.0,
        "fedavgm, fedadam, fedyogi, fedadagrad: server learning rate (0: Flower's default)",
        ge=0,
    )
    server_momentum: float = opt(
        0.9, "fedavgm: server momentum; fedadam, fedyogi: beta_1", ge=0, lt=1
    )
    trim_fraction: float = opt(
        0.2, "fedtrimmedavg: fraction of the client updates cut from each end", ge=0, lt=0.5
    )
    partition: str = opt(
        "auto",
        "how the training split is divided among clients: auto (iid; token streams: shards), "
        "iid, dirichlet, pathological, shards (contiguous)",
        choices=["auto", "iid", "dirichlet", "pathological", "shards"],
    )
    alpha: float = opt(0.5, "dirichlet: concentration (small: each client holds few classes)", gt=0)
    classes_per_client: int = opt(2, "pathological: classes each client holds", ge=1)
    partition_seed: int = opt(0, "seed of the partitioning (independent of train.seed)")
    engine: str = opt(
        "inprocess",
        "one machine: inprocess (clients one after another in this process) or ray "
        "(Flower's simulation engine; pip install 'flwr[simulation]')",
        choices=["inprocess", "ray"],
    )
    client_threads: int = opt(
        1,
        "torch threads of each simulated client (0: torch's default); one each, as Ray gives "
        "its actors, ran mlp-digits 19x faster on a shared 2-core machine",
        ge=0,
    )
