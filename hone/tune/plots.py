"""Optuna's plots of a study, listed once: drawn as figures for `hone report tune/NAME` and
written as a folder (`report/`) at the end of `hone tune`.

Each plot is one of Optuna's own functions; optuna.visualization returns Plotly figures and
optuna.visualization.matplotlib has a function of the same name for the PNG. A plot Optuna
cannot draw for this study (importances of one trial) is named with the reason instead.

The HTML files of the folder share one copy of plotly.js (plotly's include_plotlyjs =
"directory"), so they open without a network and the folder stays one bundle in size.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

NO_COMPLETE_TRIAL = {"all plots": "no complete trial yet"}


@dataclass(frozen=True)
class StudyPlot:
    """One of Optuna's plots of a study, and how to call it."""

    name: str  # the file name in the report folder, the page's slug after "study-"
    title: str
    function: str  # the same name in optuna.visualization and optuna.visualization.matplotlib
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyFigure:
    """A plot drawn: its Plotly figure."""

    plot: StudyPlot
    figure: Any  # plotly.graph_objects.Figure


def _first_value(trial: FrozenTrial) -> float:
    assert trial.values is not None
    return trial.values[0]


def study_plots(study: optuna.Study, metrics: list[str]) -> list[StudyPlot]:
    """Every plot of `study`: those that apply to it (the Pareto front needs two metrics)."""
    first: dict[str, Any] = {"target_name": metrics[0]}
    if len(study.directions) > 1:
        first["target"] = _first_value
    plots = [
        StudyPlot("optimization_history", "Optimization history", "plot_optimization_history", first),
        StudyPlot("param_importances", "Parameter importances", "plot_param_importances", first),
        StudyPlot("parallel_coordinate", "Parallel coordinates", "plot_parallel_coordinate", first),
        StudyPlot("slice", "Slices: the objective against each parameter", "plot_slice", first),
        StudyPlot(
            "intermediate_values",
            "Intermediate values (what the pruner saw)",
            "plot_intermediate_values",
        ),
    ]  # fmt: skip
    if len(study.directions) > 1:
        plots.append(
            StudyPlot(
                "pareto_front", "Pareto front", "plot_pareto_front", {"target_names": metrics}
            )
        )
    plots.append(StudyPlot("timeline", "Timeline", "plot_timeline"))
    return plots


def _importance_problem(study: optuna.Study) -> str:
    """Why parameter importances cannot be computed ('' when they can)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"needs at least 2 complete trials, got {len(complete)}"
    varying = {
        name
        for t in complete
        for name in t.params
        if len({repr(u.params.get(name)) for u in complete}) > 1
    }
    if not varying:
        return "needs a parameter that takes two values among the complete trials"
    return ""


def _problem(study: optuna.Study, plot: StudyPlot) -> str:
    """Why `plot` cannot be drawn for `study` yet ('' when it can)."""
    if plot.name == "param_importances":
        return _importance_problem(study)
    if plot.name == "intermediate_values" and not any(
        t.intermediate_values for t in study.get_trials(deepcopy=False)
    ):
        return "no trial reported an intermediate value"
    return ""


@contextmanager
def _quiet() -> Iterator[None]:
    # Optuna calls some plots experimental and warns when few trials back an importance
    # estimate; the plots are still what we want, and the leaderboard says how few.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _points(trace: Any) -> int:
    for attribute in ("x", "y", "values", "dimensions", "base"):
        value = getattr(trace, attribute, None)
        if value is not None and len(value):
            return len(value)
    return 0


def study_figures(
    study: optuna.Study, metrics: list[str]
) -> tuple[list[StudyFigure], dict[str, str]]:
    """The Plotly figures of `study`, and {title: reason} for the plots left out."""
    import optuna.visualization as vis

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return [], dict(NO_COMPLETE_TRIAL)
    figures, skipped = [], {}
    for plot in study_plots(study, metrics):
        if problem := _problem(study, plot):
            skipped[plot.title] = problem
            continue
        try:
            with _quiet():
                figure = getattr(vis, plot.function)(study, **plot.kwargs)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            skipped[plot.title] = str(e) or type(e).__name__
            continue
        if not any(_points(trace) for trace in figure.data):
            skipped[plot.title] = "no data for it yet"
            continue
        figures.append(StudyFigure(plot, figure))
    return figures, skipped


def write_plots(study: optuna.Study, directory: Path, metrics: list[str]) -> dict[str, str]:
    """Write each plot into `directory` as .html and .png; return {title: reason} left out."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis_mpl

    directory.mkdir(parents=True, exist_ok=True)
    figures, skipped = study_figures(study, metrics)
    for drawn in figures:
        plot = drawn.plot
        drawn.figure.write_html(directory / f"{plot.name}.html", include_plotlyjs="directory")
        with _quiet():
            axes = getattr(vis_mpl, plot.function)(study, **plot.kwargs)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(directory / f"{plot.name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
    return skipped
