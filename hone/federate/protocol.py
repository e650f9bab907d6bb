"""What the server and its clients agree on: the keys of their messages and of a SuperNode's
node config, the config they share, and the seeds both derive from it.

Everything a client needs besides its own data travels in the train message: the global
weights, the round, FedProx's mu and the run's whole config as TOML, so a SuperNode needs
no hone config of its own, only its place among the clients (`partition-id`,
`num-partitions` in its `--node-config`).
"""

from __future__ import annotations

import tomllib

from hone.config import Config, from_dict, to_toml, validate

# Record keys of a message's content (Flower's strategies use "arrays" and "config").
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
CLIENT_INFO = "hone-client"  # a reply's ConfigRecord: the client's partition and its labels

# Keys in the train message's config record.
SERVER_ROUND = "server-round"  # set by Flower's strategies
PROXIMAL_MU = "proximal-mu"  # set by Flower's FedProx
HONE_CONFIG = "hone-config"  # the run's config, as TOML

# Keys in a reply's metric record; "num-examples" weighs a client in Flower's averages.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
STEPS = "steps"
SKIPPED_STEPS = "skipped-steps"

# Keys in a client reply's info record.
PARTITION_ID = "partition-id"  # also the node config key, as in Flower's examples
NUM_PARTITIONS = "num-partitions"
LABEL_COUNTS = "label-counts"

# Keys of the deployed ServerApp's run config (the Flower app's [tool.flwr.app.config]).
RUN_DIR = "run-dir"
RESUME = "resume"


def config_text(cfg: Config) -> str:
    return to_toml(cfg)


def config_from_text(text: str) -> Config:
    """The config a message carried, checked as any loaded config is."""
    cfg = from_dict(tomllib.loads(text))
    validate(cfg)
    assert isinstance(cfg, Config)
    return cfg


def mix_seed(*keys: int) -> int:
    """One 63-bit seed from several integers (the run's seed, a client, a round): distinct
    keys give unrelated streams, the same keys the same one on every machine."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + int(key) + 0x9E3779B9) % (2**63 - 1)
    return seed
