"""The typed config tree: one dataclass per section, the single place where defaults live.

Every field's `help` is its documentation; `ge`/`gt`/`le`/`lt`/`choices` are checked when a
config is loaded, so a bad value is answered with one line that names the flag to fix.
Names that pick an implementation from a registry (`model.name`, `optim.name`, ...) are
checked by that registry when the component is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

from hone.config.components import field_names, model_config_class, not_applicable
from hone.config.fields import field_default, opt
from hone.errors import ConfigError


@dataclass(init=False)
class ModelConfig:
    """Settings every model has, and in `arch` the chosen family's own config.

    Each model family owns a config dataclass next to its code (`GPTConfig` in
    `hone/models/gpt.py`, registered by `model.name`, see `hone.config.components`). Its fields
    read and write as if they were ModelConfig's own (`cfg.model.n_layer`), and are written to
    TOML in the same flat `[model]` table, so `--model.n_layer=8` names them. A field of another
    family is refused with one line naming the family it belongs to. Setting `name` switches
    `arch` to the new family's config, keeping the values of the fields both families have.
    """

    name: str = opt(
        "mlp",
        "model family: linear, logistic, mlp, cnn, gpt, or custom; only the chosen family's own "
        "keys may be set",
    )
    arch: Any = field(
        default=None,
        metadata={"flatten": True, "help": "the chosen family's own config (flat in [model])"},
    )
    init: str = opt(
        "default",
        "weight initialization",
        choices=[
            "default",
            "xavier_uniform",
            "xavier_normal",
            "kaiming_uniform",
            "kaiming_normal",
            "normal",
        ],
    )
    init_std: float = opt(0.02, "standard deviation for init = 'normal'", gt=0)
    zero_bias: bool = opt(False, "set all biases to zero after initialization")

    def __init__(self, arch: Any = None, **values: Any) -> None:
        """Common and family fields as keywords: ModelConfig(name="gpt", n_layer=2)."""
        for f in dataclasses.fields(self):
            if f.name != "arch":
                value = values.pop(f.name) if f.name in values else field_default(f)
                object.__setattr__(self, f.name, value)
        family = model_config_class(self.name)
        for key in values:
            if key not in field_names(family):
                raise ConfigError(not_applicable(key, self.name) or _unknown(key))
        if arch is None:
            arch = family(**values)
        else:
            assert type(arch) is family, f"arch {arch!r} is not the config of {self.name!r}"
            arch = dataclasses.replace(cast(Any, arch), **values)
        object.__setattr__(self, "arch", arch)

    @property
    def context_length(self) -> int:
        """Tokens per training window of a language model (GPT: block_size); 0 for others."""
        return int(getattr(self.arch, "context_length", 0))

    def __getattr__(self, key: str) -> Any:
        # Called only when normal lookup fails: the family's fields read through. `arch` is
        # read from __dict__ so that copy and pickle, which probe a bare instance, get an
        # AttributeError instead of a recursion.
        arch = self.__dict__.get("arch")
        if arch is None or key.startswith("__"):
            raise AttributeError(key)
        if key in field_names(arch):
            return getattr(arch, key)
        raise AttributeError(not_applicable(key, self.name) or _unknown(key))

    def __setattr__(self, key: str, value: Any) -> None:
        if key in _COMMON_FIELDS:
            object.__setattr__(self, key, value)
            if key == "name":
                self._switch_family()
        elif key in field_names(self.arch):
            setattr(self.arch, key, value)
        else:
            raise AttributeError(not_applicable(key, self.name) or _unknown(key))

    def _switch_family(self) -> None:
        family = model_config_class(self.name)
        if type(self.arch) is not family:
            shared = field_names(family) & field_names(self.arch)
            kept = {key: getattr(self.arch, key) for key in shared}
            object.__setattr__(self, "arch", family(**kept))


def _unknown(key: str) -> str:
    return f"unknown config key 'model.{key}'; see `hone config keys` for every key"


_COMMON_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


@dataclass
class DataConfig:
    name: str = opt(
        "digits",
        "data set: synthetic_linear, digits, mnist, fashion_mnist, csv, npz, custom, shakespeare, text, tokens",
    )
    path: str = opt("", "file or folder for csv, npz, mnist, fashion_mnist, text and tokens data")
    target: str = opt("", "user data set factory 'package.module:factory' (name = 'custom')")
    kwargs: dict[str, Any] = opt({}, "keyword arguments passed to the user data set factory")
    val_fraction: float = opt(0.15, "fraction of the data held out for validation", ge=0, lt=1)
    test_fraction: float = opt(0.15, "fraction of the data held out for testing", ge=0, lt=1)
    split_seed: int = opt(0, "seed of the train/validation/test split (independent of train.seed)")
    normalize: str = opt(
        "standard",
        "feature scaling fitted on the training split",
        choices=["none", "standard", "minmax"],
    )
    augment_shift: int = opt(
        0, "images: random shift of up to this many pixels while training", ge=0
    )
    augment_noise: float = opt(0.0, "images: std of Gaussian noise added while training", ge=0)
    # synthetic_linear
    num_samples: int = opt(1000, "synthetic: number of samples", ge=2)
    num_features: int = opt(5, "synthetic: number of features", ge=1)
    noise: float = opt(0.1, "synthetic: std of the label noise", ge=0)
    # csv / npz
    target_column: str = opt(
        "",
        "csv: name of the target column (default: the last column); npz: key of the targets (default 'y')",
    )
    task: str = opt(
        "auto",
        "csv/npz/custom: task of the targets",
        choices=["auto", "regression", "classification", "binary"],
    )
    # language modelling
    tokenizer: str = opt("char", "text: tokenizer", choices=["char", "byte", "bpe"])
    tokenizer_path: str = opt("", "text: a tokenizer.json to load instead of training one")
    bpe_vocab_size: int = opt(1024, "text: vocabulary size when training a BPE tokenizer", ge=257)
    token_dtype: str = opt(
        "uint16", "tokens: dtype of a pre-tokenized file", choices=["uint16", "uint32"]
    )
    cache_dir: str = opt("", "where tokenized corpora are cached (default ~/.cache/hone)")


@dataclass
class LossConfig:
    name: str = opt("cross_entropy", "loss: mse, mae, huber, cross_entropy, bce")
    label_smoothing: float = opt(0.0, "cross_entropy: label smoothing", ge=0, lt=1)
    huber_delta: float = opt(1.0, "huber: threshold between quadratic and linear", gt=0)


@dataclass
class OptimConfig:
    name: str = opt(
        "adamw", "optimizer: gd, sgd, adam, adamw, adagrad, rmsprop, lbfgs, newton, muon"
    )
    lr: float = opt(
        1e-3, "learning rate (the peak, when a schedule warms up); lbfgs and newton want 1", gt=0
    )
    weight_decay: float = opt(
        0.0,
        "decoupled (adamw, muon) or L2 (others) weight decay; lbfgs/newton have none (use reg.l2)",
        ge=0,
    )
    momentum: float = opt(0.0, "sgd/rmsprop: momentum", ge=0, lt=1)
    nesterov: bool = opt(False, "sgd: Nesterov momentum")
    betas: list[float] = opt([0.9, 0.999], "adam/adamw/muon's AdamW: (beta1, beta2)")
    eps: float = opt(1e-8, "adam/adamw/adagrad/rmsprop: epsilon", gt=0)
    alpha: float = opt(0.99, "rmsprop: smoothing constant", gt=0, lt=1)
    history_size: int = opt(10, "lbfgs: history size", ge=1)
    max_iter: int = opt(20, "lbfgs: iterations per step", ge=1)
    line_search: str = opt("strong_wolfe", "lbfgs: line search", choices=["strong_wolfe", "none"])
    damping: float = opt(0.0, "newton: added to the Hessian diagonal", ge=0)
    max_params: int = opt(5000, "newton: refuse models with more parameters than this", ge=1)
    muon_lr: float = opt(0.02, "muon: learning rate of the 2-D hidden weights", gt=0)
    muon_momentum: float = opt(0.95, "muon: momentum of the 2-D hidden weights", ge=0, lt=1)
    muon_precision: str = opt(
        "auto",
        "muon: dtype of the Newton-Schulz iterations: auto (bf16 where the device has native "
        "bf16, else fp32), bf16 (torch's), fp32",
        choices=["auto", "bf16", "fp32"],
    )
    impl: str = opt(
        "auto",
        "kernel: auto (fused/foreach where torch has it), foreach, fused, single",
        choices=["auto", "foreach", "fused", "single"],
    )


@dataclass
class ScheduleConfig:
    name: str = opt(
        "constant", "lr schedule: constant, inverse_time, step, exponential, cosine, linear, wsd"
    )
    warmup_steps: int = opt(
        0, "linear warmup over this many steps: lr * (step + 1) / warmup_steps", ge=0
    )
    decay_steps: int = opt(
        0, "cosine/linear/wsd: step at which the lr reaches min_lr (0: the run's total steps)", ge=0
    )
    min_lr: float = opt(
        0.0, "cosine/linear/wsd: lr at the end of decay; the floor of every schedule", ge=0
    )
    decay: float = opt(0.01, "inverse_time: lr = lr0 / (1 + decay * step)", ge=0)
    step_size: int = opt(100, "step: multiply the lr by gamma every step_size steps", ge=1)
    gamma: float = opt(0.1, "step/exponential: multiplicative factor", gt=0, le=1)
    decay_fraction: float = opt(0.2, "wsd: fraction of decay_steps spent decaying", gt=0, le=1)


@dataclass
class RegConfig:
    l1: float = opt(0.0, "coefficient of the L1 penalty added to the loss", ge=0)
    l2: float = opt(0.0, "coefficient of the L2 penalty (sum of squares) added to the loss", ge=0)


@dataclass
class TrainConfig:
    seed: int = opt(0, "global seed of torch, numpy, Python and the data order")
    deterministic: bool = opt(False, "bit-identical runs on the CPU (deterministic kernels)")
    max_steps: int = opt(0, "stop after this many optimizer steps (0: no bound)", ge=0)
    max_epochs: int = opt(0, "stop after this many epochs (0: no bound)", ge=0)
    max_seconds: float = opt(0.0, "stop after this much training time (0: no bound)", ge=0)
    batch_size: int = opt(64, "global batch size per optimizer step", ge=1)
    eval_batch_size: int = opt(512, "batch size for evaluation", ge=1)
    eval_batches: int = opt(
        20,
        "language models: validation batches per evaluation (0: the whole split, in order)",
        ge=0,
    )
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step", ge=1)
    eval_every: int = opt(0, "evaluate every N steps (0: once per epoch, or at the end)", ge=0)
    device: str = opt("auto", "auto (CUDA when present), cpu, cuda, cuda:N")
    threads: int | str = opt(
        "auto",
        "torch CPU threads: auto (all cores, fewer while other processes hold some: "
        "measured during the run) or a count",
    )
    precision: str = opt(
        "auto",
        "auto (bf16 where the device runs bf16 natively: CUDA with bf16, a CPU with "
        "AVX512-BF16/AMX; else fp32; summary.json says which and why), fp32, bf16 (autocast) "
        "or fp16 (autocast + GradScaler, CUDA)",
        choices=["auto", "fp32", "bf16", "fp16"],
    )
    compile: bool = opt(False, "wrap the model in torch.compile")
    clip_norm: float = opt(0.0, "clip the gradient norm to this (0: off)", ge=0)
    clip_value: float = opt(0.0, "clip each gradient element to +-this (0: off)", ge=0)
    monitor: str = opt(
        "val_loss", "metric for early stopping and best checkpoints: val_loss or val_<metric>"
    )
    patience: int = opt(
        0, "early stopping: evaluations without improvement before stopping (0: off)", ge=0
    )
    min_delta: float = opt(0.0, "early stopping: least change that counts as improvement", ge=0)
    peak_flops: float = opt(0.0, "device peak FLOP/s for MFU (0: look up or measure)", ge=0)
    checkpoint_every: int = opt(0, "write a checkpoint every N steps (0: only at the end)", ge=0)
    keep_last: int = opt(3, "checkpoints to keep (the newest)", ge=1)
    keep_best: bool = opt(False, "also keep the best checkpoint by train.monitor")
    nan_guard: bool = opt(
        True, "skip steps whose loss or gradient norm is not finite (one host sync per step)"
    )
    max_bad_steps: int = opt(3, "consecutive non-finite steps before rolling back", ge=1)
    max_rollbacks: int = opt(2, "rollbacks before giving up with exit code 3", ge=0)
    rollback_skip: int = opt(1, "batches to skip after a rollback", ge=0)
    activation_checkpointing: bool = opt(False, "recompute each block's activations in backward")
    sample_tokens: int = opt(200, "language models: tokens sampled at the end of training", ge=0)
    profile: bool = opt(
        False,
        "profile a window of steps after warm-up with torch.profiler "
        "(trace, top ops, step-time shares)",
    )
    profile_wait: int = opt(
        5, "profiling: steps run unprofiled before the profiler's warm-up", ge=0
    )
    profile_warmup: int = opt(2, "profiling: steps profiled and discarded before the window", ge=0)
    profile_steps: int = opt(5, "profiling: steps in the window (shortened to fit the run)", ge=1)


@dataclass
class LogConfig:
    every: int = opt(10, "log training metrics every N steps", ge=1)
    progress: str = opt(
        "auto", "progress bar: auto (when a terminal), on, off", choices=["auto", "on", "off"]
    )
    tensorboard: bool = opt(True, "write TensorBoard event files")
    stats_every: int = opt(
        50,
        "training statistics (per-layer gradient, weight, update and activation figures, "
        "read by `hone doctor`) every N steps, and at the first step (0: off)",
        ge=0,
    )

    mlflow: bool = opt(
        False,
        "mirror params, metrics and the final weights to MLflow as well "
        "(pip install 'hone-ml[mlflow]')",
    )
    mlflow_uri: str = opt(
        "",
        "MLflow tracking URI ('': MLFLOW_TRACKING_URI, else MLflow's local default: "
        "./mlflow.db with artifacts in ./mlruns/), e.g. http://host:5000 or sqlite:///mlflow.db",
    )


@dataclass
class DistConfig:
    strategy: str = opt("ddp", "multi-process strategy: ddp or fsdp", choices=["ddp", "fsdp"])
    timeout_seconds: float = opt(120.0, "collective timeout before a stuck group fails", gt=0)
    fsdp_param_dtype: str = opt(
        "fp32", "fsdp: parameter dtype in compute", choices=["fp32", "bf16"]
    )
    fsdp_reduce_dtype: str = opt("fp32", "fsdp: gradient reduction dtype", choices=["fp32", "bf16"])
    cpu_offload: bool = opt(False, "fsdp: keep parameters and optimizer state on the CPU")


@dataclass
class TuneConfig:
    space: dict[str, Any] = opt(
        {},
        "search space keyed by config path, e.g. 'optim.lr' = {type='float', low=1e-4, high=1e-1, log=true}",
    )
    metric: str = opt(
        "val_loss",
        "objective: a metric of the trial's run (val_loss, val_<metric>, num_parameters, ...); "
        "several, comma-separated, give a Pareto front",
    )
    direction: str = opt(
        "auto",
        "minimize or maximize (min/max) per metric, comma-separated like tune.metric; "
        "auto maximizes accuracy and r2 and minimizes the rest",
    )
    sampler: str = opt("tpe", "sampler: tpe, random, grid, cmaes, gp, qmc, nsga2")
    pruner: str = opt(
        "auto",
        "pruner: auto (median for one metric, none for several), none, median, "
        "successive-halving (ASHA), hyperband",
    )
    seed: int = opt(0, "seed of the sampler (worker i uses seed + i)")
    startup_trials: int = opt(
        5, "median pruner: trials that finish before any is pruned; tpe: random trials first", ge=0
    )
    min_resource: int = opt(
        0, "successive-halving/hyperband: steps before the first rung (0: auto)", ge=0
    )
    reduction_factor: int = opt(
        3, "successive-halving/hyperband: 1/factor of the trials go on at each rung", ge=2
    )
    heartbeat_seconds: int = opt(
        10, "how often a running trial records that its worker is alive", ge=1
    )
    grace_seconds: int = opt(
        0, "a trial silent this long is failed and retried (0: 3 x heartbeat_seconds)", ge=0
    )
    max_retry: int = opt(2, "retries of a trial whose worker died", ge=0)
    report: bool = opt(True, "write plots (HTML and PNG) into <tuning dir>/report at the end")


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


@dataclass
class Config:
    recipe: str = opt("", "name of the recipe this config came from")
    description: str = opt("", "one line saying what this config trains")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
