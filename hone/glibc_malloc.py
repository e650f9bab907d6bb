"""glibc's malloc tunables a training process starts with: no per-thread cache (tcache) and
no fast bins, so that what a training step frees can be used again by the next step.

torch asks for each CPU tensor's memory with posix_memalign(64, n). glibc (2.36, Debian 12)
serves an aligned request by taking a free chunk of n + 64 + 32 bytes and giving back the
slack before and after the aligned block as two small free chunks. Those small chunks are
exactly what the cache and the fast bins hand out first to the next small requests (the
autograd graph's nodes, thousands a forward), so each tensor ends up between two small live
allocations; once it is freed, its hole is the tensor's own size, 96 bytes short of what
the next request of that size asks for, and stays empty until the step ends. Traced with
mtrace over two steps of SmolLM2-135M (fp32, batch 4 x 256, the trainer's thresholds from
hone.engine.allocator): at the end of the second forward the heap spanned 1,711 MB for
827 MB in use, 169 of its holes one (B, T, C) activation long. Without the cache and the
fast bins the freed slack joins its neighbours again and the holes are used: peak RSS of
the step's process 1,972-1,982 MiB against 2,165-2,200 (`bench/pretrained.py train-step
--rounds 3`: 0.64x transformers' instead of 0.71x), the steps as fast (BENCHMARKS.md,
issue 26).

Tunables are read once, when the process starts (mallopt has no setting for the cache), so
`hone train|tune|lr-find` start themselves again at once with GLIBC_TUNABLES set
(`relaunch_to_train`), as torch's own CPU launcher (torch.backends.xeon.run_cpu) sets its
allocator through the environment. A value the user set for either tunable is kept. A
Python program that trains through hone.Trainer gets the same by starting with
`GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0` (docs/python.md).

Written here because no library does it; torch-free, so that the command line can decide
before it imports anything heavy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

TUNABLES_VAR = "GLIBC_TUNABLES"
TUNABLES = {"glibc.malloc.tcache_count": "0", "glibc.malloc.mxfast": "0"}
# The commands whose process trains for many steps
TRAINING_COMMANDS = frozenset({"train", "tune", "lr-find"})


def is_glibc() -> bool:
    """Whether this process runs on glibc (whose tunables these are)."""
    try:
        return sys.platform == "linux" and os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # a C library without the name
        return False


def training_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """`env` with hone's tunables added to GLIBC_TUNABLES (the user's own kept, theirs win
    for the same name); None when every one is already there or this is not glibc."""
    if not is_glibc():
        return None
    current = env.get(TUNABLES_VAR, "")
    named = {item.split("=", 1)[0] for item in current.split(":") if item}
    missing = [f"{name}={value}" for name, value in TUNABLES.items() if name not in named]
    if not missing:
        return None
    return {**env, TUNABLES_VAR: ":".join([*filter(None, current.split(":")), *missing])}


def command_of(args: Sequence[str]) -> str | None:
    """The subcommand of `hone ARGS`: the first argument that is not an option."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def relaunch_to_train(args: Sequence[str]) -> None:
    """When `hone ARGS` trains and its process did not start with hone's tunables, replace
    this process (the same pid, signals and files) by the same command line started with
    them; otherwise return. Nothing has been imported, printed or opened yet."""
    if command_of(args) not in TRAINING_COMMANDS:
        return
    env = training_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # cannot start again (an interpreter that moved): train as it is
        return
