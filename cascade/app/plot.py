"""Quality against cost: one labelled point per sweep job, with the Pareto front drawn."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cascade.core.files import atomic_path

# label placements tried in turn (offset in points, horizontal alignment) until one does not overlap
_PLACES = ((5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right"), (5, 14, "left"),
           (-5, 14, "right"), (5, -21, "left"), (-5, -21, "right"))


def pareto_front(costs: Sequence[float], qualities: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (cost no higher and quality no lower, one strictly),
    ordered by cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -qualities[i]))
    front, best = [], float("-inf")
    for i in order:
        if qualities[i] > best:
            front.append(i)
            best = qualities[i]
    return front


def _place_labels(ax, renderer, xs, ys, labels) -> None:
    """Annotate each point, choosing for each label the first placement that covers no other
    label and no point."""
    from matplotlib.transforms import Bbox

    pixels = ax.transData.transform(list(zip(xs, ys))) if xs else []
    dots = [Bbox.from_bounds(x - 4, y - 4, 8, 8) for x, y in pixels]
    taken: list[Bbox] = []
    for i in sorted(range(len(xs)), key=lambda j: (xs[j], ys[j])):
        others = taken + [dot for j, dot in enumerate(dots) if j != i]
        for n, (dx, dy, ha) in enumerate(_PLACES):
            note = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                               ha=ha, fontsize=7, color="#222222")
            box = note.get_window_extent(renderer)
            if n == len(_PLACES) - 1 or not any(box.overlaps(other) for other in others):
                taken.append(box)
                break
            note.remove()


def quality_cost_figure(points: Sequence[dict], metric: str = "nDCG@10", title: str = "",
                        baseline: str | None = None):
    """A matplotlib Figure of ``metric`` against ms/query; ``points`` are ``{"label", "cost", "quality"}``.

    Every point is labelled; the Pareto front is the dashed step line.
    """
    logging.getLogger("matplotlib.font_manager").setLevel(logging.WARNING)  # "generated new fontManager"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = [float(p["cost"]) for p in points]
    ys = [float(p["quality"]) for p in points]
    labels = [str(p["label"]) for p in points]
    fig = Figure(figsize=(9, 6), dpi=130)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(xs, ys, s=22, color="#1f77b4", zorder=3, label="job")
    front = pareto_front(xs, ys)
    if front:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post", linestyle="--", color="#d62728", zorder=2, label="Pareto front")
        ax.scatter(fx, fy, s=70, facecolors="none", edgecolors="#d62728", zorder=4)
    if baseline is not None and baseline in labels:
        i = labels.index(baseline)
        ax.scatter([xs[i]], [ys[i]], marker="*", s=160, color="#ff7f0e", zorder=5, label="baseline")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("ms per query (all stages)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if xs:
        ax.margins(x=0.12, y=0.08)
    canvas.draw()
    _place_labels(ax, canvas.get_renderer(), xs, ys, labels)
    fig.tight_layout()
    return fig


def plot_quality_vs_cost(points: Sequence[dict], path: str | os.PathLike, metric: str = "nDCG@10",
                         title: str = "", baseline: str | None = None) -> Path:
    """Write :func:`quality_cost_figure` as a PNG, under a temporary name renamed into place."""
    fig = quality_cost_figure(points, metric, title, baseline)
    with atomic_path(path) as tmp:
        fig.canvas.print_png(str(tmp))
    return Path(path)
