"""The typed config tree: one dataclass per section, the single place where defaults live.

Every field's `help` is its documentation; `ge`/`gt`/`le`/`lt`/`choices` are checked when a
config is loaded, so a bad value is answered with one line that names the flag to fix.
Names that pick an implementation from a registry (`model.name`, `optim.name`, ...) are
checked by that registry when the component is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hone.config.components import (
    DATA_SETS,
    MODEL_FAMILIES,
    OPTIMIZER_CONFIGS,
    TRAINER_PARTS,
    ChosenComponent,
    SectionParts,
    part_field,
    section_factory,
)
from hone.config.fields import opt

if TYPE_CHECKING:  # the sections the applications own; hone.config.components resolves them
    from hone.federate.settings import FederatedConfig
    from hone.finetune.settings import LoRAConfig
    from hone.tune.settings import TuneConfig


@dataclass(init=False)
class ModelConfig(ChosenComponent):
    """Settings every model has, and in `arch` the chosen family's own config.

    Each model family owns a config dataclass next to its code (`GPTConfig` in
    `hone/models/gpt.py`, registered by `model.name`, see `hone.config.components`). Its fields
    read and write as if they were ModelConfig's own (`cfg.model.n_layer`), and are written to
    TOML in the same flat `[model]` table, so `--model.n_layer=8` names them. A field of another
    family is refused with one line naming the family it belongs to. Setting `name` switches
    `arch` to the new family's config, keeping the values of the fields both families have.
    """

    components = MODEL_FAMILIES
    own = "arch"

    name: str = opt(
        "mlp",
        "model family: linear, logistic, mlp, cnn, gpt, llama, pretrained (a Hugging Face "
        "checkpoint), or custom; only the chosen family's own "
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

    @property
    def context_length(self) -> int:
        """Tokens per training window of a language model (GPT: block_size); 0 for others."""
        return int(getattr(self.arch, "context_length", 0))


@dataclass(init=False)
class DataConfig(ChosenComponent):
    """Settings every data set has, and in `options` the chosen data set's own config.

    Each data set owns a config dataclass next to its code (`SyntheticLinearConfig` in
    `hone/data/synthetic.py`, registered by `data.name`), read, written and refused as the
    model families' are (see ModelConfig): `--data.num_samples=500` sets synthetic_linear's
    sample count, and is refused for digits. The split and the scaling are every data set's.
    """

    components = DATA_SETS
    own = "options"

    name: str = opt(
        "digits",
        "data set: synthetic_linear, digits, mnist, fashion_mnist, csv, npz, custom, shakespeare, "
        "text, tokens, checkpoint, chat; only the chosen data set's own keys may be set",
    )
    val_fraction: float = opt(0.15, "fraction of the data held out for validation", ge=0, lt=1)
    test_fraction: float = opt(
        0.15, "fraction of the data held out for testing (not language models)", ge=0, lt=1
    )
    split_seed: int = opt(0, "seed of the train/validation/test split (independent of train.seed)")
    normalize: str = opt(
        "standard",
        "feature scaling fitted on the training split (not token ids)",
        choices=["none", "standard", "minmax"],
    )
    options: Any = field(
        default=None,
        metadata={"flatten": True, "help": "the chosen data set's own config (flat in [data])"},
    )


@dataclass
class LossConfig:
    name: str = opt("cross_entropy", "loss: mse, mae, huber, cross_entropy, bce")
    label_smoothing: float = opt(0.0, "cross_entropy: label smoothing", ge=0, lt=1)
    huber_delta: float = opt(1.0, "huber: threshold between quadratic and linear", gt=0)


@dataclass(init=False)
class OptimConfig(ChosenComponent):
    """Settings every optimizer has, and in `options` the chosen optimizer's own config.

    Each optimizer owns a config dataclass next to its code (`SGDConfig` in
    `hone/optim/torch_optimizers.py`, registered by `optim.name`), read, written and refused
    as the model families' are (see ModelConfig): `--optim.momentum=0.9` sets SGD's momentum,
    and is refused for adamw.
    """

    components = OPTIMIZER_CONFIGS
    own = "options"

    name: str = opt(
        "adamw",
        "optimizer: gd, sgd, adam, adamw, adagrad, rmsprop, lbfgs, newton, muon; only the "
        "chosen optimizer's own keys may be set",
    )
    lr: float = opt(
        1e-3, "learning rate (the peak, when a schedule warms up); lbfgs and newton want 1", gt=0
    )
    weight_decay: float = opt(
        0.0,
        "decoupled (adamw, muon) or L2 (others) weight decay; lbfgs/newton have none (use reg.l2)",
        ge=0,
    )
    impl: str = opt(
        "auto",
        "kernel: auto (fused/foreach where torch has it), foreach, fused, single",
        choices=["auto", "foreach", "fused", "single"],
    )
    options: Any = field(
        default=None,
        metadata={"flatten": True, "help": "the chosen optimizer's own config (flat in [optim])"},
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


@dataclass(init=False)
class TrainConfig(SectionParts):
    """How the run trains; the keys of its concerns are theirs (see `SectionParts`)."""

    parts = TRAINER_PARTS

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
    metrics: list[str] = opt(
        [],
        "your own metrics, evaluated with the task's: names registered with "
        "hone.register_metric (in a module beside the TOML) or handed to hone.Trainer",
    )
    patience: int = opt(
        0, "early stopping: evaluations without improvement before stopping (0: off)", ge=0
    )
    min_delta: float = opt(0.0, "early stopping: least change that counts as improvement", ge=0)
    peak_flops: float = opt(0.0, "device peak FLOP/s for MFU (0: look up or measure)", ge=0)
    # The trainer's concerns own their keys, flat in [train]: each a dataclass next to the
    # engine code that reads it, registered by the name of its field here.
    checkpointing: Any = part_field(
        "when checkpoints are written and kept (hone.engine.checkpointing)"
    )
    guard: Any = part_field("the NaN guard and its rollbacks (hone.engine.guard)")
    activation_checkpointing: bool = opt(False, "recompute each block's activations in backward")
    sampling: Any = part_field("what a language model samples (hone.engine.language_task)")
    profiler: Any = part_field("the profiler's window (hone.engine.profiling)")


@dataclass
class LogConfig:
    every: int = opt(10, "log training metrics every N steps", ge=1)
    progress: str = opt(
        "auto",
        "progress bar: auto (in a terminal or a Jupyter notebook), on, off",
        choices=["auto", "on", "off"],
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
    # Owned by hone.tune and hone.federate, which register them (hone/tune/settings.py,
    # hone/federate/settings.py); created on first need, so hone.config imports neither.
    tune: TuneConfig = field(default_factory=section_factory("tune"))
    federated: FederatedConfig = field(default_factory=section_factory("federated"))
    # Owned by hone.finetune (hone/finetune/settings.py): LoRA adapters on a frozen model.
    lora: LoRAConfig = field(default_factory=section_factory("lora"))
