"""`diagnose(run_dir)`: every rule over a run's evidence, findings ordered, the first is the
diagnosis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hone.doctor.evidence import Evidence, read
from hone.doctor.rules import RULES, SEVERITIES, Finding, loss_shape


def findings(evidence: Evidence) -> list[Finding]:
    """Every rule's finding, by severity, then by how strongly its evidence holds."""
    shape = loss_shape(evidence)
    found = [f for rule in RULES if (f := rule(evidence, shape)) is not None]
    return sorted(found, key=lambda f: (SEVERITIES.index(f.severity), -f.strength))


def diagnose(run_dir: str | Path) -> dict[str, Any]:
    """{"run", "healthy", "findings": [{"id", "severity", "evidence", "fix", "why"}, ...]}
    for the run directory `run_dir` (live, finished or stopped), from its files only;
    healthy means no finding is an error."""
    evidence = read(run_dir)
    found = findings(evidence)
    return {
        "run": str(run_dir),
        "healthy": not any(f.severity == "error" for f in found),
        "steps": evidence.steps,
        "statistics": bool(evidence.layers),
        "adapters": evidence.adapters,
        "findings": [f.to_json() for f in found],
    }
