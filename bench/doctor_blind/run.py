"""Train every blind case, ask `hone doctor`, score it; the table to stdout and a JSON file.

For each case: train it, run `hone doctor RUN --json`, check independently (checks.py) that
the pathology is really there (or, for a healthy case, that it trained fine); a faulty case
whose check fails is reported invalid and left out of the rates. Then for each valid faulty
case two more runs: its textbook fix (cases.py), and the fix the doctor itself suggested in
its first finding; each fix works when the case's pathology check no longer fires and the
final validation loss is lower than the faulty run's.

Scores: detection (the expected finding id among the findings), top-1 (it is the first
finding, the doctor's diagnosis), findings on healthy runs (errors and warnings), and the
success rates of both fixes.

Run: `.venv/bin/python bench/doctor_blind/run.py` (58 cases, 40 textbook fixes and up to 40
doctor fixes, ~140 short `hone train` runs two at a time: 20 minutes on 2 cores that other work
kept at a load of 5-6; most of a run's time is starting Python and torch). `--work DIR` keeps
the runs; `--no-doctor` validates the cases and their textbook fixes without asking the doctor.
The first pass (bench/results/doctor_blind_first_pass.json) ran the doctor of one commit by
putting a `git archive` of it first on PYTHONPATH: every `hone` started here imports that.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.doctor_blind.cases import CASES, Case  # noqa: E402
from bench.doctor_blind.checks import CHECKS, healthy, quality  # noqa: E402
from bench.doctor_blind.datasets import write_all  # noqa: E402
from bench.doctor_blind.record import RunRecord  # noqa: E402

HONE = Path(sys.executable).parent / "hone"  # the hone of this interpreter's environment
TRAIN_TIMEOUT_SECONDS = 300
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def _hone(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [str(HONE), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def train(case: Case, extra: tuple[str, ...], run_dir: Path, data_dir: Path) -> int:
    """`hone train` the case (plus `extra` overrides) into run_dir; answer the exit code."""
    args = [a.replace("{data}", str(data_dir)) for a in case.args(extra)]
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun into the same --work starts afresh
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = _hone(
            ["train", case.recipe, "--run-dir", str(run_dir), *args], TRAIN_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        return 124
    (run_dir.parent / f"{run_dir.name}.log").write_text(done.stdout[-4000:] + done.stderr[-8000:])
    return done.returncode


def doctor(run_dir: Path) -> dict[str, Any]:
    """`hone doctor RUN --json`: its report, or {"error": ...} when it gave none."""
    done = _hone(["doctor", str(run_dir), "--json"], 120)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}", "findings": []}
    report["exit_code"] = done.returncode
    return report


def _summary_of(record: RunRecord) -> dict[str, Any]:
    q = quality(record)
    return {
        "returncode": record.returncode,
        "steps": record.last_step,
        "initial_loss": record.initial_loss(),
        "final_train_loss": record.final_train_loss(),
        "final_val_loss": None if math.isinf(q) else q,
    }


def _findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": f.get("id"),
            "severity": f.get("severity"),
            "fix": f.get("fix", []),
            "strength": f.get("strength"),
            "summary": f.get("summary"),
            "evidence": f.get("evidence"),
        }
        for f in report.get("findings", [])
    ]


def run_case(job: tuple[Case, str, tuple[str, ...], str, str, bool]) -> dict[str, Any]:
    """One run of a case: `variant` is 'case', 'fix' or 'doctor_fix'. Runs in a pool worker;
    a failure of the harness itself comes back as a result that no check passes."""
    try:
        return _run_case(*job)
    except Exception as error:  # noqa: BLE001 - one broken case must not end the pass
        case, variant, extra = job[:3]
        return {
            "case": case.name,
            "variant": variant,
            "overrides": list(extra),
            "run": {"returncode": None, "final_val_loss": None},
            "check": {"present": False, "evidence": {"harness_error": repr(error)}},
            "pathologies_seen": [],
            "doctor": [],
            "doctor_error": None,
            "seconds": 0.0,
        }


def _run_case(
    case: Case, variant: str, extra: tuple[str, ...], work: str, data: str, ask_doctor: bool
) -> dict[str, Any]:
    run_dir = Path(work) / case.name / variant
    started = time.perf_counter()
    rc = train(case, extra, run_dir, Path(data))
    record = RunRecord.load(run_dir, rc)
    out: dict[str, Any] = {
        "case": case.name,
        "variant": variant,
        "overrides": list(extra),
        "run": _summary_of(record),
    }
    checks = {name: check(record, case.level) for name, check in CHECKS.items()}
    if case.faulty:
        out["check"] = asdict(checks[case.expected])
    else:
        out["check"] = asdict(healthy(record, case.level))
    out["pathologies_seen"] = [name for name, v in checks.items() if v.present]
    if variant == "case" and ask_doctor:
        out["doctor"] = _findings(report := doctor(run_dir))
        out["doctor_error"] = report.get("error")
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _fix_worked(case_result: dict[str, Any], fix_result: dict[str, Any]) -> bool:
    """The pathology's check no longer fires and the final validation loss went down."""
    before = case_result["run"]["final_val_loss"]
    after = fix_result["run"]["final_val_loss"]
    better = after is not None and (before is None or after < before)
    return (not fix_result["check"]["present"]) and better


def _doctor_fix(findings: list[dict[str, Any]]) -> tuple[str, ...] | None:
    """The overrides of the doctor's first finding, as `key=value` (None: nothing to apply)."""
    if not findings:
        return None
    items = [f[2:] for f in findings[0]["fix"] if f.startswith("--") and "=" in f]
    return tuple(items) or None


def _pool_map(jobs: list[tuple], processes: int) -> list[dict[str, Any]]:
    if not jobs:
        return []
    with multiprocessing.Pool(processes) as pool:
        results = []
        for result in pool.imap_unordered(run_case, jobs):
            present = result["check"]["present"]
            if result["variant"] == "case":
                status = "valid" if present else "INVALID"
            else:
                status = "pathology left" if present else "pathology gone"
            print(
                f"  {result['case']:<42} {result['variant']:<10} {status:<15}"
                f"{result['seconds']:>6.1f} s",
                flush=True,
            )
            results.append(result)
    return results


def evaluate(cases: list[Case], work: Path, processes: int, ask_doctor: bool) -> dict[str, Any]:
    data = work / "data"
    write_all(data)
    print(f"training {len(cases)} cases into {work}")
    first = _pool_map([(c, "case", (), str(work), str(data), ask_doctor) for c in cases], processes)
    by_name = {r["case"]: {"case": r} for r in first}
    fix_jobs = []
    for c in cases:
        result = by_name[c.name]["case"]
        if not c.faulty or not result["check"]["present"]:
            continue
        fix_jobs.append((c, "fix", c.fix, str(work), str(data), False))
        suggested = _doctor_fix(result.get("doctor", []))
        if ask_doctor and suggested is not None:
            fix_jobs.append((c, "doctor_fix", suggested, str(work), str(data), False))
    print(f"training {len(fix_jobs)} fixes")
    for r in _pool_map(fix_jobs, processes):
        by_name[r["case"]][r["variant"]] = r
    return by_name


def score(cases: list[Case], runs: dict[str, Any], ask_doctor: bool) -> dict[str, Any]:
    rows = []
    for c in cases:
        r = runs[c.name]
        case_run = r["case"]
        found = case_run.get("doctor", [])
        ids = [f["id"] for f in found]
        row: dict[str, Any] = {
            "name": c.name,
            "recipe": c.recipe,
            "expected": c.expected,
            "why": c.why,
            "overrides": list(c.overrides),
            "textbook_fix": list(c.fix),
            "valid": case_run["check"]["present"],
            "check": case_run["check"],
            "other_pathologies_seen": [p for p in case_run["pathologies_seen"] if p != c.expected],
            "run": case_run["run"],
            "findings": found,
        }
        if ask_doctor:
            row["doctor_error"] = case_run.get("doctor_error")
            row["detected"] = c.expected in ids
            ranked = sorted(found, key=lambda f: SEVERITY_ORDER.get(f["severity"], 9))
            row["top1"] = bool(found) and found[0]["id"] == c.expected
            row["top1_most_severe"] = bool(ranked) and ranked[0]["id"] == c.expected
            row["errors"] = sum(f["severity"] == "error" for f in found)
            row["warnings"] = sum(f["severity"] == "warning" for f in found)
        if "fix" in r:
            row["fix_run"] = r["fix"]["run"]
            row["fix_check"] = r["fix"]["check"]
            row["fix_worked"] = _fix_worked(case_run, r["fix"])
        if "doctor_fix" in r:
            row["doctor_fix_overrides"] = r["doctor_fix"]["overrides"]
            row["doctor_fix_run"] = r["doctor_fix"]["run"]
            row["doctor_fix_worked"] = _fix_worked(case_run, r["doctor_fix"])
        elif c.faulty and row["valid"] and ask_doctor:
            row["doctor_fix_overrides"] = None
            row["doctor_fix_worked"] = False  # no finding, or a finding without overrides
        rows.append(row)
    return {"cases": rows, "totals": totals(rows, ask_doctor)}


def _rate(hits: int, total: int) -> dict[str, Any]:
    return {"hits": hits, "total": total, "rate": round(hits / total, 3) if total else None}


def totals(rows: list[dict[str, Any]], ask_doctor: bool) -> dict[str, Any]:
    faulty = [r for r in rows if r["expected"] != "healthy"]
    valid = [r for r in faulty if r["valid"]]
    healthy_rows = [r for r in rows if r["expected"] == "healthy"]
    healthy_valid = [r for r in healthy_rows if r["valid"]]
    out: dict[str, Any] = {
        "faulty_cases": len(faulty),
        "faulty_valid": len(valid),
        "faulty_invalid": [r["name"] for r in faulty if not r["valid"]],
        "healthy_cases": len(healthy_rows),
        "healthy_valid": len(healthy_valid),
        "healthy_invalid": [r["name"] for r in healthy_rows if not r["valid"]],
        "textbook_fix_success": _rate(sum(r.get("fix_worked", False) for r in valid), len(valid)),
    }
    if ask_doctor:
        out["detection"] = _rate(sum(r["detected"] for r in valid), len(valid))
        out["top1"] = _rate(sum(r["top1"] for r in valid), len(valid))
        out["top1_most_severe"] = _rate(sum(r["top1_most_severe"] for r in valid), len(valid))
        out["healthy_with_error"] = _rate(
            sum(r["errors"] > 0 for r in healthy_valid), len(healthy_valid)
        )
        out["healthy_with_warning"] = _rate(
            sum(r["warnings"] > 0 for r in healthy_valid), len(healthy_valid)
        )
        out["healthy_findings"] = {
            r["name"]: [f"{f['id']} ({f['severity']})" for f in r["findings"]]
            for r in healthy_valid
            if r["findings"]
        }
        out["doctor_fix_success"] = _rate(
            sum(r.get("doctor_fix_worked", False) for r in valid), len(valid)
        )
        per_id: dict[str, list[int]] = {}
        for r in valid:
            hits = per_id.setdefault(r["expected"], [0, 0, 0])
            hits[0] += r["detected"]
            hits[1] += r["top1"]
            hits[2] += 1
        out["per_finding"] = {
            k: {"detected": v[0], "top1": v[1], "cases": v[2]} for k, v in sorted(per_id.items())
        }
    return out


def print_table(result: dict[str, Any], ask_doctor: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    def mark(value: Any) -> str:
        return "-" if value is None else ("[green]yes[/]" if value else "[red]no[/]")

    table = Table(title="hone doctor: blind evaluation set (issue 29)")
    for column in (
        "case",
        "expected",
        "check",
        "doctor's findings",
        "det",
        "top1",
        "fix",
        "dr fix",
    ):
        table.add_column(column, overflow="fold")
    for r in result["cases"]:
        findings = ", ".join(
            f"{f['id']}{'!' if f['severity'] == 'error' else '?'}" for f in r["findings"]
        ) or ("healthy" if ask_doctor else "")
        table.add_row(
            r["name"],
            r["expected"],
            "valid" if r["valid"] else "[red]INVALID[/]",
            findings,
            mark(r.get("detected")) if r["expected"] != "healthy" else "",
            mark(r.get("top1")) if r["expected"] != "healthy" else "",
            mark(r.get("fix_worked")) if "fix_worked" in r else "",
            mark(r.get("doctor_fix_worked")) if "doctor_fix_worked" in r else "",
        )
    console = Console(width=160)
    console.print(table)
    console.print("findings: ! error, ? warning or info")
    console.print_json(json.dumps(result["totals"]))


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/doctor_blind.json")
    parser.add_argument("--processes", type=int, default=2, choices=(1, 2))
    parser.add_argument("--only", nargs="+", help="case names to run (default: all)")
    parser.add_argument(
        "--no-doctor",
        action="store_true",
        help="validate the cases and textbook fixes without asking the doctor",
    )
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or c.name in args.only]
    unknown = set(args.only or ()) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case names {sorted(unknown)}; see bench/doctor_blind/cases.py")
    ask_doctor = not args.no_doctor
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="doctor-blind-") as tmp:
        work = args.work or Path(tmp)
        runs = evaluate(cases, work.resolve(), args.processes, ask_doctor)
        result = score(cases, runs, ask_doctor)
    result["meta"] = {
        "command": " ".join([".venv/bin/python", "bench/doctor_blind/run.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "git_commit": _git("rev-parse", "HEAD"),
        "doctor_files_changed_since_commit": _git("status", "--short", "hone/doctor").split("\n"),
        "hone": str(HONE),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "processes": args.processes,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print_table(result, ask_doctor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({result['meta']['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
