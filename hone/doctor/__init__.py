"""Diagnostics of a config or a run: `diagnose` reads a run directory and names what went
wrong with the fix to try; `lr_find` trains a little to suggest a learning rate.

Applications of the engine: they read run files (hone.run_files) and drive the trainer,
and nothing below imports them.
"""

from hone.doctor.diagnosis import diagnose, findings
from hone.doctor.rules import DEFINITIONS, IDS, SEVERITY_MEANINGS, Finding

__all__ = ["DEFINITIONS", "IDS", "SEVERITY_MEANINGS", "Finding", "diagnose", "findings"]
