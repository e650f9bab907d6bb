"""A blind evaluation set for `hone doctor` (issue 29).

Written by a helper that saw the doctor's finding ids (from `hone doctor --json` output of its
own runs, since the CLI does not list them) and the CLI, and not the doctor's rules or its
development and hold-out cases. Each faulty case is a recipe plus overrides built to show one
pathology; an independent check (`checks.py`, reading the run's own files) confirms that the
pathology is really there before the doctor's answer counts. `run.py` trains every case, asks
the doctor, and scores detection, top-1, findings on healthy runs and whether the fixes work.
"""
