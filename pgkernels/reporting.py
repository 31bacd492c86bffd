"""Writing results: JSON-safe values, Markdown tables, matplotlib figures.

Shared by the applications that report experiments (the federated lab
:mod:`pgkernels.fl`, private training :mod:`pgkernels.train`, the Flower
example); they lay out their own tables and panels with these helpers.
Figures use matplotlib's object API on the Agg canvas (no pyplot state, no
display needed).
"""

import dataclasses
import json
import math
import pathlib

import numpy as np

__all__ = ["cpu_model", "figure", "jsonable", "markdown_table", "pct", "provenance", "save_figure", "write_json",
           "write_text"]


def jsonable(x):
    """``x`` with only JSON types: numpy scalars and arrays to Python numbers
    and lists, tuples to lists, dataclass instances (e.g. a backdoor trigger)
    to dicts, keys to strings, and NaN / inf to None (so the file is strict
    JSON, readable anywhere)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    return x


def pct(x, digits=1, missing="–"):
    """A fraction as a percentage without the sign (``0.953 -> "95.3"``); ``missing`` for None or NaN."""
    if x is None or (isinstance(x, (float, np.floating)) and math.isnan(x)):
        return missing
    return f"{100 * x:.{digits}f}"


def markdown_table(header, rows):
    """A Markdown table: ``header`` (column titles) and ``rows`` (lists of cells, converted with ``str``)."""
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        row = [str(c) for c in row]
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(header)} columns: {row}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _parent(path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def cpu_model():
    """The CPU's model name (Linux ``/proc/cpuinfo``; "" where unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""


def provenance(command):
    """What a committed results file records about its run: the command, the
    commit (and whether the tree had changes), the library versions, the date
    and the machine (CPU model, cores, load average)."""
    import datetime
    import os
    import platform
    import subprocess
    from importlib import metadata

    from ._version import __version__

    here = pathlib.Path(__file__).resolve().parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    versions = {"python": platform.python_version(), "pgkernels": __version__}
    for dist in ("torch", "numpy", "crypten", "scikit-learn"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"command": command, "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "versions": versions, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def write_json(obj, path):
    """Write :func:`jsonable` ``obj`` to ``path`` (parents created); returns the path."""
    path = _parent(path)
    path.write_text(json.dumps(jsonable(obj), indent=1, allow_nan=False))
    return path


def write_text(text, path):
    """Write ``text`` to ``path`` (parents created); returns the path."""
    path = _parent(path)
    path.write_text(text)
    return path


def figure(figsize, layout="constrained"):
    """A matplotlib ``Figure`` on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=120):
    """Save ``fig`` to ``path`` (parents created); returns the path as a string."""
    path = _parent(path)
    fig.savefig(path, dpi=dpi)
    return str(path)
