"""The cases: each a recipe plus overrides, the pathology it is built to show, and its fix.

`expected` is a finding id of `hone doctor` (or "healthy"); `fix` is the textbook remedy for
that pathology, written as the overrides a user would add; `level` is the validation loss a
working setup on the same data reaches (the checks call a loss above it "stuck"). Names are
stable: results are keyed by them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every run: one thread (two runs share the machine), fp32 everywhere (`precision = auto`
# would pick bf16 on some CPUs only, and the cases must mean the same on every machine),
# bounded by steps alone, no TensorBoard or progress bar, no FLOP-rate probe.
COMMON = (
    "train.threads=1",
    "train.precision=fp32",
    "train.max_epochs=0",
    "train.peak_flops=1e12",
    "log.tensorboard=false",
    "log.progress=off",
)
CONSTANT_LR = ("schedule.name=constant", "schedule.warmup_steps=0")
DIGITS_SMALL = ("data.val_fraction=0.45", "data.test_fraction=0.45")  # ~180 training images
GPT_SMALL = (  # 2 x 64, block 32: ~100k parameters, a few seconds for 150 steps
    "model.n_layer=2",
    "model.n_embd=64",
    "model.n_head=4",
    "model.block_size=32",
    "train.batch_size=16",
    "train.eval_batches=4",
    "train.sample_tokens=0",
)

DIGITS_LEVEL = 0.35  # mlp-digits reaches ~0.1 validation loss in 200 steps
DIGITS_SMALL_LEVEL = 0.5
LINREG_LEVEL = 0.05  # label noise 0.1: the best mse is ~0.01
SHAKESPEARE_LEVEL = 2.8  # GPT_SMALL reaches ~2.67 in 150 steps
SCALED_CLASSIFICATION_LEVEL = 0.35


@dataclass(frozen=True)
class Case:
    name: str
    recipe: str
    overrides: tuple[str, ...]  # "key=value", applied after COMMON
    expected: str  # a finding id, or "healthy"
    level: float
    why: str  # the pathology as built, in one line
    fix: tuple[str, ...] = ()  # textbook remedy, added after `overrides`

    def args(self, extra: tuple[str, ...] = ()) -> list[str]:
        """`hone train` arguments after the recipe name; `{data}` is filled in by the runner."""
        return [f"--{item}" for item in COMMON + self.overrides + extra]

    @property
    def faulty(self) -> bool:
        return self.expected != "healthy"


def steps(max_steps: int, eval_every: int, log_every: int = 5, stats_every: int = 25) -> tuple:
    return (
        f"train.max_steps={max_steps}",
        f"train.eval_every={eval_every}",
        f"log.every={log_every}",
        f"log.stats_every={stats_every}",
    )


NPZ_REGRESSION = ("data.name=npz", "data.path={data}/scaled_regression.npz")
NPZ_CLASSIFICATION = ("data.name=npz", "data.path={data}/scaled_classification.npz")
EARLY_STOP = ("train.patience=4",)

FAULTY: list[Case] = [
    # --- overfitting: validation loss bottoms out early and climbs while training loss falls
    Case(
        "overfit-mlp-wide-digits-small",
        "mlp-digits",
        (
            "model.depth=3",
            "model.width=512",
            "model.dropout=0",
            "optim.weight_decay=0",
            "optim.lr=1e-3",
            *DIGITS_SMALL,
            *CONSTANT_LR,
            *steps(400, 5),
        ),
        "overfitting",
        DIGITS_SMALL_LEVEL,
        "issue 29 (a): 3 x 512 MLP, no dropout, no weight decay, ~180 training digits",
        ("model.dropout=0.3", "optim.weight_decay=0.1", *EARLY_STOP),
    ),
    Case(
        "overfit-cnn-wide-digits-small",
        "cnn-digits",
        (
            "model.channels=[64, 128]",
            "model.activation=gelu",
            "model.dropout=0",
            "data.augment_shift=0",
            "optim.weight_decay=0",
            "optim.lr=1e-2",
            "data.val_fraction=0.48",
            "data.test_fraction=0.48",
            *CONSTANT_LR,
            *steps(400, 10),
        ),
        "overfitting",
        DIGITS_SMALL_LEVEL,
        "wide GELU CNN without augmentation or dropout on ~70 training digits",
        ("model.dropout=0.3", "data.augment_shift=1", "optim.weight_decay=0.1", *EARLY_STOP),
    ),
    Case(
        "overfit-linreg-many-features",
        "linreg",
        (
            "data.num_features=100",
            "data.num_samples=400",
            "data.noise=5.0",
            "data.val_fraction=0.4",
            "data.test_fraction=0.3",
            "train.batch_size=120",
            "optim.lr=0.2",
            *steps(800, 20),
        ),
        "overfitting",
        100.0,
        "full-batch gradient descent, 100 features on 120 noisy samples: fits the noise",
        ("reg.l2=0.3", "train.patience=3"),
    ),
    Case(
        "overfit-gpt-tiny-text",
        "gpt-shakespeare-char",
        (
            *GPT_SMALL,
            "model.n_embd=128",
            "model.block_size=64",
            "data.name=text",
            "data.path={data}/tiny_text.txt",
            "data.val_fraction=0.25",
            "data.test_fraction=0.1",
            "optim.lr=3e-3",
            "optim.weight_decay=0",
            *CONSTANT_LR,
            *steps(400, 20),
        ),
        "overfitting",
        SHAKESPEARE_LEVEL,
        "char GPT on 2,600 characters of training text: memorizes it",
        ("model.dropout=0.2", "optim.weight_decay=0.1", "train.patience=2"),
    ),
    Case(
        "overfit-mlp-sgd-momentum-digits-small",
        "mlp-digits",
        (
            "model.width=512",
            "model.dropout=0",
            "optim.weight_decay=0",
            "optim.name=sgd",
            "optim.lr=0.05",
            "optim.momentum=0.9",
            *DIGITS_SMALL,
            *CONSTANT_LR,
            *steps(400, 5),
        ),
        "overfitting",
        DIGITS_SMALL_LEVEL,
        "2 x 512 MLP, SGD with momentum, no regularization, ~180 training digits",
        ("model.dropout=0.3", "optim.weight_decay=1e-3", *EARLY_STOP),
    ),
    # --- plateau: the schedule took the lr to ~0 early, and the loss stalled there
    Case(
        "lrdecay-step-mlp-digits",
        "mlp-digits",
        (
            "schedule.name=step",
            "schedule.step_size=15",
            "schedule.gamma=1e-3",
            "schedule.warmup_steps=0",
            *steps(300, 10),
        ),
        "plateau",
        DIGITS_LEVEL,
        "issue 29 (b): step schedule dividing the lr by 1000 every 15 steps",
        ("schedule.name=cosine",),
    ),
    Case(
        "lrdecay-exponential-cnn-digits",
        "cnn-digits",
        (
            "schedule.name=exponential",
            "schedule.gamma=0.8",
            "schedule.warmup_steps=0",
            *steps(200, 10),
        ),
        "plateau",
        DIGITS_LEVEL,
        "exponential schedule with gamma 0.8 per step: lr under 1% of its peak by step 21",
        ("schedule.gamma=0.99",),
    ),
    Case(
        "lrdecay-cosine-short-gpt",
        "gpt-shakespeare-char",
        (
            *GPT_SMALL,
            "schedule.name=cosine",
            "schedule.decay_steps=10",
            "schedule.min_lr=0",
            "schedule.warmup_steps=0",
            *steps(150, 15),
        ),
        "plateau",
        SHAKESPEARE_LEVEL,
        "cosine schedule that reaches lr 0 at step 10 of 150",
        ("schedule.decay_steps=0",),
    ),
    Case(
        "lrdecay-inverse-time-mlp-sgd",
        "mlp-digits",
        (
            "optim.name=sgd",
            "optim.lr=0.05",
            "optim.momentum=0.9",
            "schedule.name=inverse_time",
            "schedule.decay=5",
            "schedule.warmup_steps=0",
            *steps(300, 10),
        ),
        "plateau",
        DIGITS_LEVEL,
        "inverse-time decay 5 per step: lr / 101 by step 20",
        ("schedule.decay=0.01",),
    ),
    Case(
        "lrdecay-linear-linreg",
        "linreg",
        ("schedule.name=linear", "schedule.decay_steps=5", "schedule.min_lr=0", *steps(200, 10)),
        "plateau",
        LINREG_LEVEL,
        "linear schedule reaching lr 0 at step 5 of 200 (plain SGD)",
        ("schedule.decay_steps=0",),
    ),
    Case(
        "lrdecay-wsd-mlp-rmsprop",
        "mlp-digits",
        (
            "optim.name=rmsprop",
            "optim.lr=1e-3",
            "schedule.name=wsd",
            "schedule.decay_steps=20",
            "schedule.decay_fraction=0.5",
            "schedule.warmup_steps=0",
            *steps(300, 10),
        ),
        "plateau",
        DIGITS_LEVEL,
        "warmup-stable-decay schedule that ends its decay at step 20 of 300 (RMSprop)",
        ("schedule.decay_steps=0",),
    ),
    # --- lr too high: the loss climbs well above its start (finite)
    Case(
        "lrhigh-mlp-adamw",
        "mlp-digits",
        ("optim.lr=0.1", *CONSTANT_LR, *steps(200, 10)),
        "lr_too_high",
        DIGITS_LEVEL,
        "AdamW at lr 0.1 on the MLP",
        ("optim.lr=1e-3",),
    ),
    Case(
        "lrhigh-gpt-adamw",
        "gpt-shakespeare-char",
        (*GPT_SMALL, "optim.lr=0.5", "train.clip_norm=0", *CONSTANT_LR, *steps(150, 15)),
        "lr_too_high",
        SHAKESPEARE_LEVEL,
        "AdamW at lr 0.5 on the char GPT, no warmup, no clipping",
        ("optim.lr=3e-3",),
    ),
    Case(
        "lrhigh-cnn-sgd",
        "cnn-digits",
        ("optim.name=sgd", "optim.lr=1.0", "optim.momentum=0.9", *CONSTANT_LR, *steps(200, 10)),
        "lr_too_high",
        DIGITS_LEVEL,
        "SGD with momentum 0.9 at lr 1.0 on the CNN",
        ("optim.lr=0.01",),
    ),
    Case(
        "lrhigh-linreg-sgd-diverging",
        "linreg",
        ("optim.lr=1.05", *steps(60, 5)),
        "lr_too_high",
        LINREG_LEVEL,
        "plain SGD at lr 1.05, just past the stable 2/curvature: the loss grows each step",
        ("optim.lr=0.05",),
    ),
    # --- non-finite: the loss overflows to inf/NaN
    Case(
        "nonfinite-linreg-sgd",
        "linreg",
        ("optim.lr=3.0", *steps(200, 10)),
        "non_finite",
        LINREG_LEVEL,
        "plain SGD at lr 3 on standardized linear regression: past 2/curvature, it overflows",
        ("optim.lr=0.05",),
    ),
    Case(
        "nonfinite-mlp-sgd",
        "mlp-digits",
        ("optim.name=sgd", "optim.lr=20", "optim.momentum=0.9", *CONSTANT_LR, *steps(200, 10)),
        "non_finite",
        DIGITS_LEVEL,
        "SGD with momentum at lr 20 on the MLP",
        ("optim.lr=0.05",),
    ),
    Case(
        "nonfinite-gpt-sgd",
        "gpt-shakespeare-char",
        (
            *GPT_SMALL,
            "optim.name=sgd",
            "optim.lr=100",
            "optim.momentum=0.9",
            "train.clip_norm=0",
            *CONSTANT_LR,
            *steps(100, 10),
        ),
        "non_finite",
        SHAKESPEARE_LEVEL,
        "SGD with momentum at lr 100 on the char GPT, no clipping",
        ("optim.lr=0.5", "train.clip_norm=1.0"),
    ),
    # --- lr too low: the loss creeps down, far from where it could be
    Case(
        "lrlow-mlp-sgd",
        "mlp-digits",
        ("optim.name=sgd", "optim.lr=1e-4", *CONSTANT_LR, *steps(300, 10)),
        "lr_too_low",
        DIGITS_LEVEL,
        "plain SGD at lr 1e-4 on the MLP",
        ("optim.lr=0.1",),
    ),
    Case(
        "lrlow-gpt-adamw",
        "gpt-shakespeare-char",
        (*GPT_SMALL, "optim.lr=1e-6", "schedule.min_lr=0", *CONSTANT_LR, *steps(150, 15)),
        "lr_too_low",
        SHAKESPEARE_LEVEL,
        "AdamW at lr 1e-6 on the char GPT",
        ("optim.lr=3e-3",),
    ),
    Case(
        "lrlow-linreg-sgd",
        "linreg",
        ("optim.lr=3e-5", *steps(200, 10)),
        "lr_too_low",
        LINREG_LEVEL,
        "plain SGD at lr 3e-5 on linear regression",
        ("optim.lr=0.05",),
    ),
    Case(
        "lrlow-cnn-adam",
        "cnn-digits",
        ("optim.name=adam", "optim.lr=1e-6", *CONSTANT_LR, *steps(150, 10)),
        "lr_too_low",
        DIGITS_LEVEL,
        "Adam at lr 1e-6 on the CNN",
        ("optim.lr=3e-3",),
    ),
    # --- oscillation: the loss overshoots and rings while coming down
    Case(
        "osc-mlp-sgd-momentum-0.999",
        "mlp-digits",
        ("optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.999", *CONSTANT_LR, *steps(300, 10)),
        "oscillation",
        DIGITS_LEVEL,
        "SGD with momentum 0.999: the heavy ball keeps overshooting",
        ("optim.momentum=0.9",),
    ),
    Case(
        "osc-linreg-sgd-momentum-0.99",
        "linreg",
        ("optim.lr=0.1", "optim.momentum=0.99", *steps(200, 5)),
        "oscillation",
        LINREG_LEVEL,
        "SGD with momentum 0.99 on linear regression: a lightly damped oscillator",
        ("optim.momentum=0.5",),
    ),
    Case(
        "osc-cnn-sgd-momentum-0.995",
        "cnn-digits",
        ("optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.995", *CONSTANT_LR, *steps(300, 10)),
        "oscillation",
        DIGITS_LEVEL,
        "SGD with momentum 0.995 on the CNN",
        ("optim.momentum=0.9", "optim.lr=0.02"),
    ),
    # --- dead ReLU units: large steps push units into never firing
    Case(
        "dead-mlp-sgd-batch8",
        "mlp-digits",
        (
            "optim.name=sgd",
            "optim.lr=0.5",
            "train.batch_size=8",
            "model.dropout=0",
            *CONSTANT_LR,
            *steps(300, 10),
        ),
        "dead_units",
        DIGITS_LEVEL,
        "plain SGD at lr 0.5 with batch 8 on the ReLU MLP",
        ("optim.lr=0.02",),
    ),
    Case(
        "dead-cnn-adamw",
        "cnn-digits",
        ("optim.lr=0.1", "model.dropout=0", *CONSTANT_LR, *steps(200, 10)),
        "dead_units",
        DIGITS_LEVEL,
        "AdamW at lr 0.1 on the ReLU CNN",
        ("optim.lr=3e-3",),
    ),
    Case(
        "dead-mlp-rmsprop",
        "mlp-digits",
        ("optim.name=rmsprop", "optim.lr=0.1", "model.dropout=0", *CONSTANT_LR, *steps(200, 10)),
        "dead_units",
        DIGITS_LEVEL,
        "RMSprop at lr 0.1 on the ReLU MLP",
        ("optim.lr=1e-3",),
    ),
    # --- saturated tanh/sigmoid units
    Case(
        "sat-mlp-tanh-normal1",
        "mlp-digits",
        (
            "model.activation=tanh",
            "model.init=normal",
            "model.init_std=1.0",
            "model.dropout=0",
            *steps(200, 10),
        ),
        "saturated_units",
        DIGITS_LEVEL,
        "tanh MLP initialized N(0, 1): pre-activations of ~10 sit in the flat tails",
        ("model.init=xavier_normal",),
    ),
    Case(
        "sat-mlp-sigmoid-adamw-lr0.05",
        "mlp-digits",
        (
            "model.activation=sigmoid",
            "model.dropout=0",
            "optim.lr=0.05",
            *CONSTANT_LR,
            *steps(200, 10),
        ),
        "saturated_units",
        DIGITS_LEVEL,
        "sigmoid MLP at AdamW lr 0.05: large steps drive the units into the flat tails",
        ("optim.lr=3e-3",),
    ),
    Case(
        "sat-cnn-tanh-normal1",
        "cnn-digits",
        ("model.activation=tanh", "model.init=normal", "model.init_std=1.0", *steps(200, 10)),
        "saturated_units",
        DIGITS_LEVEL,
        "tanh CNN initialized N(0, 1)",
        ("model.init=xavier_normal",),
    ),
    # --- vanishing gradients: the backward signal dies on its way to the first layers
    Case(
        "vanish-mlp-sigmoid-depth8",
        "mlp-digits",
        (
            "model.depth=8",
            "model.activation=sigmoid",
            "model.dropout=0",
            "optim.name=sgd",
            "optim.lr=0.01",
            *steps(300, 20),
        ),
        "vanishing_gradients",
        DIGITS_LEVEL,
        "8 sigmoid layers trained by plain SGD",
        ("model.activation=relu", "model.init=kaiming_normal"),
    ),
    Case(
        "vanish-mlp-relu-depth12",
        "mlp-digits",
        (
            "model.depth=12",
            "model.width=64",
            "model.dropout=0",
            "optim.name=sgd",
            "optim.lr=0.05",
            "schedule.warmup_steps=0",
            *steps(300, 20),
        ),
        "vanishing_gradients",
        DIGITS_LEVEL,
        "12 ReLU layers of 64 with the default init, which shrinks the signal each layer",
        ("model.init=kaiming_normal",),
    ),
    Case(
        "vanish-mlp-tanh-depth10-small-init",
        "mlp-digits",
        (
            "model.depth=10",
            "model.activation=tanh",
            "model.init=normal",
            "model.init_std=0.02",
            "model.dropout=0",
            "optim.name=sgd",
            "optim.lr=0.05",
            *steps(300, 20),
        ),
        "vanishing_gradients",
        DIGITS_LEVEL,
        "10 tanh layers initialized N(0, 0.02): each layer scales the gradient by ~0.2",
        ("model.init=xavier_normal",),
    ),
    # --- bad initialization: confident wrong outputs at step 0
    Case(
        "badinit-mlp-normal-std5",
        "mlp-digits",
        ("model.init=normal", "model.init_std=5", *steps(200, 10)),
        "bad_initialization",
        DIGITS_LEVEL,
        "MLP initialized N(0, 25): logits in the thousands at step 0",
        ("model.init=kaiming_normal",),
    ),
    Case(
        "badinit-cnn-normal-std1",
        "cnn-digits",
        ("model.init=normal", "model.init_std=1.0", *steps(200, 10)),
        "bad_initialization",
        DIGITS_LEVEL,
        "CNN initialized N(0, 1)",
        ("model.init=kaiming_normal",),
    ),
    Case(
        "badinit-gpt-normal-std1",
        "gpt-shakespeare-char",
        (*GPT_SMALL, "model.init=normal", "model.init_std=1.0", *steps(150, 15)),
        "bad_initialization",
        SHAKESPEARE_LEVEL,
        "char GPT initialized N(0, 1) instead of N(0, 0.02)",
        ("model.init_std=0.02",),
    ),
    # --- inputs on the wrong scale: raw features spanning six orders of magnitude
    Case(
        "inputscale-linreg-npz",
        "linreg",
        (*NPZ_REGRESSION, "data.normalize=none", "optim.lr=1e-7", *steps(200, 10)),
        "input_scale",
        LINREG_LEVEL,
        "linear regression on raw features (std 1000 to 0.001) at the largest stable lr",
        ("data.normalize=standard", "optim.lr=0.05"),
    ),
    Case(
        "inputscale-mlp-npz-classification",
        "mlp-digits",
        (*NPZ_CLASSIFICATION, "data.normalize=none", *steps(300, 10)),
        "input_scale",
        SCALED_CLASSIFICATION_LEVEL,
        "MLP classifier on raw features (std 1000 to 0.001)",
        ("data.normalize=standard",),
    ),
    Case(
        "inputscale-mlp-npz-regression-sgd",
        "mlp-digits",
        (
            *NPZ_REGRESSION,
            "data.normalize=none",
            "loss.name=mse",
            "optim.name=sgd",
            "optim.lr=1e-6",
            "model.dropout=0",
            *steps(300, 10),
        ),
        "input_scale",
        LINREG_LEVEL,
        "MLP regression by SGD on raw features (std 1000 to 0.001)",
        ("data.normalize=standard", "optim.lr=0.01"),
    ),
]

HEALTHY: list[Case] = [
    Case(
        "healthy-linreg-sgd",
        "linreg",
        steps(200, 10),
        "healthy",
        LINREG_LEVEL,
        "the linreg recipe as shipped",
    ),
    Case(
        "healthy-linreg-adam",
        "linreg",
        ("optim.name=adam", "optim.lr=0.05", *steps(200, 10)),
        "healthy",
        LINREG_LEVEL,
        "Adam on linear regression",
    ),
    Case(
        "healthy-linreg-lbfgs",
        "linreg",
        ("optim.name=lbfgs", "optim.lr=1", *steps(20, 2, 1, 5)),
        "healthy",
        LINREG_LEVEL,
        "L-BFGS on linear regression",
    ),
    Case(
        "healthy-mlp-digits-recipe",
        "mlp-digits",
        steps(300, 10),
        "healthy",
        DIGITS_LEVEL,
        "the mlp-digits recipe as shipped",
    ),
    Case(
        "healthy-mlp-sgd-momentum",
        "mlp-digits",
        ("optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", *steps(300, 10)),
        "healthy",
        DIGITS_LEVEL,
        "SGD with momentum 0.9 and cosine decay",
    ),
    Case(
        "healthy-mlp-rmsprop",
        "mlp-digits",
        ("optim.name=rmsprop", "optim.lr=1e-3", *steps(300, 10)),
        "healthy",
        DIGITS_LEVEL,
        "RMSprop",
    ),
    Case(
        "healthy-mlp-adagrad",
        "mlp-digits",
        ("optim.name=adagrad", "optim.lr=0.05", *CONSTANT_LR, *steps(300, 10)),
        "healthy",
        DIGITS_LEVEL,
        "Adagrad at a constant lr",
    ),
    Case(
        "healthy-mlp-tanh-xavier",
        "mlp-digits",
        ("model.activation=tanh", "model.init=xavier_normal", *steps(300, 10)),
        "healthy",
        DIGITS_LEVEL,
        "tanh MLP with Xavier init",
    ),
    Case(
        "healthy-mlp-step-schedule",
        "mlp-digits",
        ("schedule.name=step", "schedule.step_size=100", "schedule.gamma=0.5", *steps(300, 10)),
        "healthy",
        DIGITS_LEVEL,
        "a gentle step schedule (x0.5 per 100)",
    ),
    Case(
        "healthy-mlp-wsd",
        "mlp-digits",
        ("schedule.name=wsd", "schedule.warmup_steps=20", *steps(300, 10)),
        "healthy",
        DIGITS_LEVEL,
        "warmup-stable-decay over the whole run",
    ),
    Case(
        "healthy-mlp-small-data-regularized",
        "mlp-digits",
        (*DIGITS_SMALL, "model.dropout=0.3", "optim.weight_decay=0.1", *EARLY_STOP, *steps(400, 5)),
        "healthy",
        DIGITS_SMALL_LEVEL,
        "~180 training digits with dropout, weight decay and early stopping",
    ),
    Case(
        "healthy-cnn-digits-recipe",
        "cnn-digits",
        steps(200, 10),
        "healthy",
        DIGITS_LEVEL,
        "the cnn-digits recipe as shipped",
    ),
    Case(
        "healthy-cnn-sgd-momentum",
        "cnn-digits",
        ("optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", *steps(200, 10)),
        "healthy",
        DIGITS_LEVEL,
        "the CNN by SGD with momentum",
    ),
    Case(
        "healthy-gpt-small-adamw",
        "gpt-shakespeare-char",
        (*GPT_SMALL, "schedule.warmup_steps=10", *steps(150, 15)),
        "healthy",
        SHAKESPEARE_LEVEL,
        "the char GPT recipe, shrunk",
    ),
    Case(
        "healthy-gpt-rope-rmsnorm",
        "gpt-shakespeare-char",
        (
            *GPT_SMALL,
            "model.pos=rope",
            "model.norm=rmsnorm",
            "model.mlp=relu2",
            "schedule.warmup_steps=10",
            *steps(150, 15),
        ),
        "healthy",
        SHAKESPEARE_LEVEL,
        "char GPT with RoPE, RMSNorm and ReLU^2",
    ),
    Case(
        "healthy-gpt-muon",
        "gpt-shakespeare-char",
        (*GPT_SMALL, "optim.name=muon", "schedule.warmup_steps=10", *steps(150, 15)),
        "healthy",
        SHAKESPEARE_LEVEL,
        "char GPT trained by Muon",
    ),
    Case(
        "healthy-npz-classification-standardized",
        "mlp-digits",
        (*NPZ_CLASSIFICATION, *steps(300, 10)),
        "healthy",
        SCALED_CLASSIFICATION_LEVEL,
        "the raw-scale classification data, standardized",
    ),
    Case(
        "healthy-npz-regression-standardized",
        "linreg",
        (*NPZ_REGRESSION, *steps(200, 10)),
        "healthy",
        LINREG_LEVEL,
        "the raw-scale regression data, standardized",
    ),
]

CASES: list[Case] = FAULTY + HEALTHY
assert len({case.name for case in CASES}) == len(CASES), "case names must be unique"
