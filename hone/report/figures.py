"""The plots of one run or several overlaid, as Plotly figures; a plot without data is left
out rather than drawn empty.

One run: train and validation in two colours. Several runs: one colour per run, training
solid and validation dashed with markers, so a run's lines are found by colour. Series longer
than `MAX_POINTS` are thinned to every n-th point (the last one kept): a page of a
100,000-step run stays light, and the shape of a curve survives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.colors import qualitative  # type: ignore[import-untyped]

from hone.report.data import RunData, Series

PALETTE = qualitative.Plotly
MAX_POINTS = 4000
HEIGHT = 360
# Train event keys with a plot of their own; any other number a run logged gets one too.
_KNOWN_TRAIN = {"loss", "lr", "elapsed", "samples_per_second", "tokens_per_second", "mfu"}


@dataclass
class Plot:
    """One figure of the page: `slug` names its container, `note` says how to read it."""

    slug: str
    title: str
    figure: go.Figure
    note: str = ""


def thin(series: Series, most: int = MAX_POINTS) -> Series:
    """Every n-th point, so that at most `most` remain; the last point is always kept."""
    if len(series) <= most:
        return series
    stride = math.ceil(len(series) / most)
    keep = list(range(0, len(series), stride))
    if keep[-1] != len(series) - 1:
        keep.append(len(series) - 1)
    return Series([series.x[i] for i in keep], [series.y[i] for i in keep])


def has_data(series: Series) -> bool:
    return any(math.isfinite(y) for y in series.y)


def new_figure(title: str, x_title: str, y_title: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template="plotly_white",
        height=HEIGHT,
        margin={"l": 60, "r": 20, "t": 60, "b": 45},
        hovermode="x unified",
        legend={"orientation": "h", "y": 1.0, "x": 0.0, "yanchor": "bottom"},
        xaxis_title=x_title,
        yaxis_title=y_title,
    )
    return figure


def line(figure: go.Figure, series: Series, name: str, color: str, dashed: bool = False) -> None:
    """Add `series` to `figure` (nothing when it has no finite value)."""
    if not has_data(series):
        return
    series = thin(series)
    figure.add_trace(
        go.Scatter(
            x=series.x,
            y=series.y,
            name=name,
            mode="lines+markers" if dashed or len(series) < 30 else "lines",
            line={"color": color, "width": 2, "dash": "dash" if dashed else "solid"},
            marker={"size": 7 if dashed or len(series) < 5 else 5},
        )
    )


def log_if_wide(figure: go.Figure) -> None:
    """A log y axis when the values span more than 30x (a loss falling from 10 to 0.1, an
    update ratio from 1e-1 to 1e-4); over a narrower range a linear one reads better."""
    values = [y for trace in figure.data for y in trace.y if y is not None and math.isfinite(y)]
    if values and min(values) > 0 and max(values) / min(values) > 30:
        figure.update_yaxes(type="log")


def legend_aside(figure: go.Figure) -> None:
    """Many lines (one per layer): the legend to the right, where it does not hide the plot."""
    if len(figure.data) > 6:
        figure.update_layout(legend={"orientation": "v", "x": 1.02, "y": 1.0, "yanchor": "top"})


def _colors(runs: Sequence[RunData]) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(len(runs))]


def loss_plot(runs: Sequence[RunData], x: str) -> Plot | None:
    """Training and validation loss against steps (`x` "step") or seconds ("elapsed")."""
    by_time = x == "elapsed"
    title = "Loss against training time" if by_time else "Loss"
    figure = new_figure(title, "training seconds" if by_time else "step", "loss")
    one = len(runs) == 1
    for run, color in zip(runs, _colors(runs), strict=True):
        val_color = PALETTE[1] if one else color
        prefix = "" if one else f"{run.name} "
        line(figure, run.series("train", "loss", x), f"{prefix}train", color)
        line(figure, run.series("val", "loss", x), f"{prefix}validation", val_color, not one)
    if not figure.data:
        return None
    uniform = runs[0].stats_run.get("uniform_loss") if one else None
    if isinstance(uniform, int | float) and math.isfinite(uniform):
        # What guessing uniformly scores: a loss that stays near it has learned nothing.
        figure.add_hline(
            y=uniform, line_dash="dot", line_color="#888", annotation_text="uniform guess"
        )
    log_if_wide(figure)
    note = (
        "Seconds of training (evaluation excluded): runs on different machines compare by cost."
        if by_time
        else "Training loss is the mean over each logging window; validation is measured at "
        "each evaluation."
    )
    return Plot(f"loss-{'time' if by_time else 'steps'}", title, figure, note)


def metric_plots(runs: Sequence[RunData]) -> list[Plot]:
    """Each validation metric other than the loss, against steps (one plot per metric)."""
    metrics: dict[str, None] = {}
    for run in runs:
        metrics.update(dict.fromkeys(k for k in run.keys("val") if k != "loss"))
    plots = []
    for metric in metrics:
        figure = new_figure(f"Validation {metric}", "step", metric)
        for run, color in zip(runs, _colors(runs), strict=True):
            line(figure, run.series("val", metric), run.name, color, dashed=len(runs) > 1)
        if figure.data:
            plots.append(Plot(f"val-{metric}", f"Validation {metric}", figure))
    return plots


def train_plot(
    runs: Sequence[RunData], key: str, title: str, y_title: str, note: str = "", scale: float = 1
) -> Plot | None:
    """One number of the train events against steps, a line per run."""
    figure = new_figure(title, "step", y_title)
    for run, color in zip(runs, _colors(runs), strict=True):
        series = run.series("train", key)
        line(figure, Series(series.x, [y * scale for y in series.y]), run.name, color)
    return Plot(f"train-{key}", title, figure, note) if figure.data else None


def stat_plot(runs: Sequence[RunData], key: str, title: str, note: str) -> Plot | None:
    """A whole-model training statistic (stats.jsonl) against steps, a line per run."""
    figure = new_figure(title, "step", key.replace("_", " "))
    for run, color in zip(runs, _colors(runs), strict=True):
        line(figure, run.stat(key), run.name, color)
    log_if_wide(figure)
    return Plot(f"stat-{key}", title, figure, note) if figure.data else None


def layer_plot(run: RunData, key: str, title: str, note: str) -> Plot | None:
    """A per-layer statistic of one run: a line per layer, in forward order."""
    figure = new_figure(title, "step", key.replace("_", " "))
    for i, (layer, series) in enumerate(run.layer_stat(key).items()):
        line(figure, series, layer, PALETTE[i % len(PALETTE)])
    log_if_wide(figure)
    legend_aside(figure)
    return Plot(f"layers-{key}", title, figure, note) if figure.data else None


def run_plots(runs: Sequence[RunData]) -> list[Plot]:
    """Every plot the runs have data for, in reading order: loss, metrics, schedule,
    statistics, throughput, then anything else they logged."""
    plots = [loss_plot(runs, "step"), loss_plot(runs, "elapsed"), *metric_plots(runs)]
    plots.append(
        train_plot(runs, "lr", "Learning rate", "lr", "The schedule as the optimizer saw it.")
    )
    plots.append(
        stat_plot(
            runs,
            "grad_norm",
            "Gradient norm",
            "The whole model's gradient 2-norm at each statistics step (log.stats_every), "
            "before clipping.",
        )
    )
    plots.append(
        stat_plot(
            runs,
            "update_ratio",
            "Update / weight ratio",
            "How far a step moves the weights relative to their size; around 1e-3 is healthy, "
            "far above is unstable, far below learns slowly.",
        )
    )
    plots.append(stat_plot(runs, "weight_norm", "Weight norm", "The whole model's weight 2-norm."))
    if len(runs) == 1:
        plots.append(
            layer_plot(runs[0], "grad_norm", "Gradient norm per layer", "Vanishing gradients "
            "show as the first layers' lines falling far below the last ones'.")
        )  # fmt: skip
        plots.append(
            layer_plot(runs[0], "dead_fraction", "Dead units per layer", "The fraction of "
            "ReLU-like units inactive on the whole batch.")
        )  # fmt: skip
    tokens = any("tokens_per_second" in e for r in runs for e in r.events.get("train", []))
    rate = "tokens_per_second" if tokens else "samples_per_second"
    plots.append(train_plot(runs, rate, "Throughput", rate.replace("_", "/").replace("/per/", "/")))
    plots.append(
        train_plot(
            runs, "mfu", "Model FLOPs utilization", "MFU (%)",
            "Achieved model FLOP/s over the device's peak.", scale=100,
        )
    )  # fmt: skip
    extra: dict[str, None] = {}
    for run in runs:
        extra.update(dict.fromkeys(k for k in run.keys("train") if k not in _KNOWN_TRAIN))
    plots += [train_plot(runs, key, f"train {key}", key) for key in extra]
    return [plot for plot in plots if plot is not None]
