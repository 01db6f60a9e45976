"""``plinth monitors report``: a monitor's page (spec, evaluations over time, drift per
column with reference-vs-current histograms, or performance per window, alerts) as ONE
self-contained HTML file, as Evidently users expect of a report. The charts are inline SVG
and the stylesheet is inlined: no script, no network, no Plinth server needed to open it.

``render_input_drift_report`` does the same for a model's inputs now: its recent serving
window against its version's training data (``MonitoringData.input_drift``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from plinth import __version__
from plinth.errors import InvalidArgument
from plinth.ui.monitor_views import (
    column_rows,
    drift_summary,
    histograms,
    monitor_view,
    profiles,
)
from plinth.ui.web import templates


def render_monitor_report(service: Any, data: Any, name: str) -> str:
    """The report of monitor ``name`` (``service``: a MonitorService or its client;
    ``data``: MonitoringData or its client)."""
    view = monitor_view(service, data, name)
    context = {
        "view": view,
        "m": view.monitor,
        "title": f"Monitor {view.monitor.name}",
        "body": "monitors/_body.html",
        **_common(),
    }
    return templates().env.get_template("monitors/report.html").render(context)


def render_input_drift_report(
    data: Any,
    model: str,
    *,
    version: int | None = None,
    window_seconds: int = 86_400,
    preset: str = "plinth",
) -> str:
    """The report of a model's input drift now: its serving window of ``window_seconds``
    against its version's training data (``data``: MonitoringData or its client)."""
    found = data.input_drift(model, version=version, window_seconds=window_seconds, preset=preset)
    rows = column_rows(found.report or {})
    reference, current = profiles(data, found.reference_profile, found.current_profile)
    context = {
        "found": found,
        "rows": rows,
        "summary": drift_summary(found.report or {}),
        "charts": histograms(rows, reference, current, names=("training", "serving")),
        "prediction_rows": column_rows(found.prediction or {}),
        "title": f"Input drift of {model} (version {found.version})",
        "body": "monitors/_input_drift.html",
        **_common(),
    }
    return templates().env.get_template("monitors/report.html").render(context)


def _common() -> dict[str, Any]:
    return {
        "styles": _static("plinth.css"),
        "version": __version__,
        "written_at": datetime.now(UTC),
        "standalone": True,
        "prefix": "",
        "may_ack": {},
        "back": "",
        "csrf": "",
        "csrf_field": "csrf",
    }


def write_text(text: str, path: Path) -> int:
    """Write a report to ``path``; returns its size in bytes."""
    encoded = text.encode()
    try:
        path.write_bytes(encoded)
    except OSError as exc:
        raise InvalidArgument(f"cannot write the report to {path}: {exc.strerror}") from None
    return len(encoded)


def write_monitor_report(service: Any, data: Any, name: str, path: Path) -> int:
    return write_text(render_monitor_report(service, data, name), path)


def _static(path: str) -> str:
    return files("plinth.ui").joinpath("static", *path.split("/")).read_text(encoding="utf-8")
