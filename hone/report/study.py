"""The report of a tuning study (`hone report tune/NAME`): the counts and best trial, Optuna's
plots (hone.tune.plots, the same list `hone tune` writes into its report folder), the
leaderboard, and the validation curves of the best trials read from their run directories.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hone.errors import ConfigError
from hone.report.data import RunData
from hone.report.figures import HEIGHT, PALETTE, Plot, line, new_figure
from hone.report.page import Page, cards, esc, fmt, plots_html, table
from hone.run_files import STUDY_DB, RunFiles

BEST_CURVES = 5  # validation curves of this many best trials


def is_study(path: Path) -> bool:
    """Whether `path` is a tuning directory with its study database."""
    return (path / STUDY_DB).is_file()


def load(directory: Path, name: str = "") -> tuple[optuna.Study, list[FrozenTrial]]:
    """The study in `directory` (the only one there, or `name`) and its trials best first."""
    from hone.tune import show
    from hone.tune.storage import default_storage_url

    if not name:
        url = default_storage_url(directory)
        names = optuna.get_all_study_names(storage=url)
        if len(names) != 1:
            raise ConfigError(
                f"{directory / STUDY_DB} holds {len(names)} studies "
                f"({', '.join(names) or 'none'}); pass --study NAME"
            )
        name = names[0]
    return show(name, directory=str(directory))


def study_plots(study: optuna.Study, metrics: list[str]) -> tuple[list[Plot], dict[str, str]]:
    """Optuna's figures in the page's style, and {title: reason} for those it could not draw."""
    from hone.tune.plots import study_figures

    figures, skipped = study_figures(study, metrics)
    plots = []
    for drawn in figures:
        # Optuna's own layout in the page's style, with room above for top axis labels.
        drawn.figure.update_layout(
            template="plotly_white",
            height=max(HEIGHT, drawn.figure.layout.height or 0),
            title={"text": drawn.plot.title, "x": 0.01},
            margin={"t": 80},
        )
        plots.append(Plot(f"study-{drawn.plot.name}", drawn.plot.title, drawn.figure))
    return plots, skipped


def best_curves(directory: Path, trials: list[FrozenTrial]) -> Plot | None:
    """Validation loss of the best complete trials, from their run directories."""
    figure = new_figure(
        f"Validation loss of the {BEST_CURVES} best trials", "step", "validation loss"
    )
    complete = [t for t in trials if t.state == TrialState.COMPLETE][:BEST_CURVES]
    for i, trial in enumerate(complete):
        run_dir = Path(
            trial.user_attrs.get("run_dir") or directory / "trials" / f"trial-{trial.number}"
        )
        if RunFiles(run_dir).metrics.is_file():
            line(
                figure,
                RunData.read(run_dir).series("val", "loss"),
                f"trial {trial.number}",
                PALETTE[i % len(PALETTE)],
                dashed=True,
            )
    return Plot("study-best-curves", "Best trials", figure) if figure.data else None


def _value(trial: FrozenTrial) -> str:
    if trial.values is not None:
        return ", ".join(fmt(v) for v in trial.values)
    if trial.intermediate_values:
        step = max(trial.intermediate_values)
        return f"{fmt(trial.intermediate_values[step])} at step {step}"
    return str(trial.user_attrs.get("error", ""))[:80]


def leaderboard(trials: list[FrozenTrial]) -> str:
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    rows = []
    for rank, trial in enumerate(trials, 1):
        seconds = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start
            else None
        )
        state = trial.state.name.lower()
        rows.append(
            [
                rank if trial.state == TrialState.COMPLETE else "",
                trial.number,
                state,
                _value(trial),
                seconds,
                *(trial.params.get(p) for p in params),
            ]
        )
    return table(["rank", "trial", "state", "value", "seconds", *params], rows)


def study_page(directory: Path, name: str = "") -> Page:
    """The page of the tuning study in `directory`."""
    study, trials = load(directory, name)
    metrics = study.user_attrs.get("metrics") or ["value"] * len(study.directions)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    directions = ", ".join(d.name.lower() for d in study.directions)
    page = Page(
        f"hone report: study {study.study_name}",
        f"{', '.join(metrics)} ({directions}) · {directory}",
    )
    best = next((t for t in trials if t.state == TrialState.COMPLETE), None)
    items = [("trials", esc(len(trials)), ", ".join(f"{n} {s}" for s, n in counts.items() if n))]
    if best is not None and best.values is not None:
        items.append((f"best {metrics[0]}", esc(fmt(best.values[0])), f"trial {best.number}"))
        items += [(k, esc(fmt(v)), "best trial") for k, v in best.params.items()]
    page.add("", cards(items))
    plots, skipped = study_plots(study, metrics)
    if curves := best_curves(directory, trials):
        plots.append(curves)
    notes = "".join(f"<li>{esc(title)}: {esc(reason)}</li>" for title, reason in skipped.items())
    page.add("Study", plots_html(plots) + (f'<ul class="muted">{notes}</ul>' if notes else ""))
    page.add("Leaderboard", leaderboard(trials))
    if (directory / "best.toml").is_file():
        text = (directory / "best.toml").read_text()
        page.add(
            "Best config",
            f"<details open><summary>best.toml</summary><pre>{esc(text)}</pre></details>",
        )
    return page
