"""The report folder: Optuna's plots of a study as HTML (plotly) and PNG (matplotlib).

The HTML files share one copy of plotly.js in the folder (plotly's include_plotlyjs =
"directory"), so they open without a network and the folder stays one bundle in size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


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


def _plots(study: optuna.Study, metrics: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (optuna plot function name, keyword arguments)."""
    first: dict[str, Any] = {"target_name": metrics[0]}
    if len(study.directions) > 1:
        first["target"] = _first_value
    plots: dict[str, tuple[str, dict[str, Any]]] = {
        "optimization_history": ("plot_optimization_history", first),
        "param_importances": ("plot_param_importances", first),
        "parallel_coordinate": ("plot_parallel_coordinate", first),
        "intermediate_values": ("plot_intermediate_values", {}),
        "timeline": ("plot_timeline", {}),
    }
    if len(study.directions) > 1:
        plots["pareto_front"] = ("plot_pareto_front", {"target_names": metrics})
    return plots


def _first_value(trial: FrozenTrial) -> float:
    assert trial.values is not None
    return trial.values[0]


def write_report(study: optuna.Study, directory: Path, metrics: list[str]) -> dict[str, str]:
    """Write every plot into `directory`; return {plot: reason} for the plots left out."""
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    directory.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {"all plots": "no complete trial"}
    for name, (function, kwargs) in _plots(study, metrics).items():
        if name == "param_importances" and (problem := _importance_problem(study)):
            skipped[name] = problem
            continue
        with warnings.catch_warnings():
            # Optuna calls its matplotlib plots experimental and warns when few trials back an
            # importance estimate; the plots are still what we want, and the table says how few.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            plot: Callable[..., Any] = getattr(vis, function)
            plot(study, **kwargs).write_html(
                directory / f"{name}.html", include_plotlyjs="directory"
            )
            axes = getattr(vis_mpl, function)(study, **kwargs)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(directory / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
    return skipped
