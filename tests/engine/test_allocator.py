"""hone.engine.allocator: while a run trains, memory a step frees stays in the process (no
page is faulted in again), and afterwards it goes back to the kernel. In a fresh interpreter:
malloc's settings are the process's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hone.engine.allocator import glibc

SCRIPT = """
import json, resource, torch
from hone.engine.allocator import FreedMemoryKept

def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(2 << 20) for _ in range(24)]  # 24 blocks of 8 MiB, as activations
    big = torch.ones(16 << 20)  # 64 MiB: past malloc's mmap threshold
    del blocks, big
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

faults_of_a_step()
result = {"plain": faults_of_a_step()}
with FreedMemoryKept():
    with FreedMemoryKept():  # a nested round changes nothing
        faults_of_a_step()
        result["kept"] = faults_of_a_step()
        result["held_rss"] = rss_mib()
    result["inner_exit_rss"] = rss_mib()
result["after_rss"] = rss_mib()
print(json.dumps(result))
"""


@pytest.mark.skipif(glibc() is None, reason="glibc's malloc only")
def test_freed_memory_is_kept_while_training_and_given_back_after() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # 256 MiB made and freed: 65,536 pages faulted in afresh without the setting
    assert result["plain"] > 20_000
    assert result["kept"] < 500
    assert result["inner_exit_rss"] > result["held_rss"] - 16  # still held
    assert result["after_rss"] < result["held_rss"] - 150  # the freed ~250 MiB given back
