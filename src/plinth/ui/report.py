"""``plinth ab report``: an A/B experiment's results as one self-contained HTML file to
share. It shows what the experiment's page shows (the same partial template, warnings and
charts) with the stylesheets, uPlot and ``plinth.js`` inlined: it opens without a
network and without a Plinth server."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from plinth import __version__
from plinth.errors import InvalidArgument
from plinth.ui.abtest_results import ESTIMATE_METHOD, results_view
from plinth.ui.web import templates

if TYPE_CHECKING:
    from plinth.abtests.service import AbTestService

_STYLES = ("vendor/uplot/uPlot.min.css", "plinth.css")
_SCRIPTS = ("vendor/uplot/uPlot.iife.min.js", "plinth.js")


def render_report(service: AbTestService, name: str) -> str:
    view = results_view(service, name, history=True)
    context = {
        "view": view,
        "exp": view.experiment,
        "history": view.history,
        "live": False,
        "refresh": "",
        "refresh_url": "",
        "estimate_method": ESTIMATE_METHOD,
        "styles": "\n".join(_static(p) for p in _STYLES),
        # a script's text ends at the first "</script": none of ours may end it early
        "scripts": [_static(p).replace("</script", "<\\/script") for p in _SCRIPTS],
        "version": __version__,
    }
    return templates().env.get_template("abtests/report.html").render(context)


def write_report(service: AbTestService, name: str, path: Path) -> int:
    """Write the report of ``name`` to ``path``; returns its size in bytes."""
    text = render_report(service, name).encode()
    try:
        path.write_bytes(text)
    except OSError as exc:
        raise InvalidArgument(f"cannot write the report to {path}: {exc.strerror}") from None
    return len(text)


def _static(path: str) -> str:
    return files("plinth.ui").joinpath("static", *path.split("/")).read_text(encoding="utf-8")
