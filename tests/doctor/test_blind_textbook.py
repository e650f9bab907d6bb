"""The two textbook cases of issue 29 from the blind set (bench/doctor_blind), end to end:
train each as the set defines it, check independently that its pathology is there (the
set's own check, which never reads the doctor), and ask the doctor. Both were called
healthy before the rules judged curves against their own best and the lr's course."""

from __future__ import annotations

import pytest

from bench.doctor_blind.cases import CASES
from bench.doctor_blind.checks import CHECKS
from bench.doctor_blind.record import RunRecord
from hone.doctor import diagnose

TEXTBOOK = {
    # 3 x 512 MLP on ~180 digits, no dropout or weight decay: the validation loss bottoms
    # out within 30 steps and climbs while the training loss goes to ~0.
    "overfit-mlp-wide-digits-small": "overfitting",
    # A step schedule dividing the lr by 1000 every 15 steps: the loss freezes at step 15.
    "lrdecay-step-mlp-digits": "plateau",
}


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_a_textbook_case_gets_its_finding_first(tmp_path, name) -> None:
    from hone.config import load_config
    from hone.engine import Trainer

    case = next(c for c in CASES if c.name == name)
    overrides = [arg.removeprefix("--") for arg in case.args()]
    run = tmp_path / "run"
    Trainer(config=load_config(case.recipe, overrides), run_dir=run).fit()
    assert CHECKS[case.expected](RunRecord.load(run), case.level).present
    report = diagnose(run)
    first = report["findings"][0]
    assert (first["id"], first["severity"]) == (TEXTBOOK[name], "error"), report["findings"]
    assert not report["healthy"] and first["fix"]
    if name.startswith("lrdecay"):  # the fix names the schedule's own knobs
        assert any(f.startswith("--schedule.step_size=") for f in first["fix"])
        assert first["evidence"]["lr_small_from_step"] <= 20
