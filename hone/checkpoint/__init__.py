"""Checkpoints that survive any crash and never run code: safetensors + JSON, sealed by a
manifest, written atomically; plus the pieces of fault tolerance (signals, NaN checks).

`format.py` is one checkpoint directory on disk, `state.py` the lossless split of nested state
into tensors and JSON, `io.py` how model and optimizer state are written (the interface a
sharded writer implements), `manager.py` a run's checkpoints (newest valid, retention),
`resume.py` what a resumed run may change, `faults.py` and `signals.py` what stops a step or a
run. The trainer's side is hone.engine.checkpointing; see docs/checkpoints.md.
"""

from hone.checkpoint.faults import (
    FaultInjector,
    FiniteCheck,
    describe,
    grad_norm,
    is_finite,
    poison,
)
from hone.checkpoint.format import (
    CorruptCheckpoint,
    UnsafeCheckpoint,
    parse_step,
    refuse_pickles,
    step_dir_name,
    verify,
)
from hone.checkpoint.io import (
    FullStateIO,
    StateIO,
    check_same_base,
    frozen_base,
    load_optimizer,
    load_weights,
    save_optimizer,
    save_trained,
    save_weights,
    saved_frozen_base,
    trained_names,
)
from hone.checkpoint.manager import Checkpoint, CheckpointManager
from hone.checkpoint.resume import (
    RESUME_OVERRIDABLE,
    check_resumable_change,
    plan_resume,
    resume_config,
    truncate_metrics,
)
from hone.checkpoint.signals import StopSignals, TrainingInterrupted
from hone.checkpoint.state import flatten, rng_state, set_rng_state, unflatten

__all__ = [
    "RESUME_OVERRIDABLE",
    "Checkpoint",
    "CheckpointManager",
    "CorruptCheckpoint",
    "FaultInjector",
    "FiniteCheck",
    "FullStateIO",
    "StateIO",
    "StopSignals",
    "TrainingInterrupted",
    "UnsafeCheckpoint",
    "check_resumable_change",
    "check_same_base",
    "describe",
    "flatten",
    "frozen_base",
    "grad_norm",
    "is_finite",
    "load_optimizer",
    "load_weights",
    "parse_step",
    "plan_resume",
    "poison",
    "refuse_pickles",
    "resume_config",
    "rng_state",
    "save_optimizer",
    "save_trained",
    "save_weights",
    "saved_frozen_base",
    "set_rng_state",
    "step_dir_name",
    "trained_names",
    "truncate_metrics",
    "unflatten",
    "verify",
]
