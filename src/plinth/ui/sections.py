"""A section is one part's pages: a router under ``/ui`` and an entry in the navigation."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from fastapi import APIRouter


@dataclass(frozen=True)
class Section:
    """``path`` is the section's first page (the navigation links to it); ``order`` places
    it in the navigation; ``summary`` describes it on the home page. A section with
    ``nav_as`` adds pages to another section's entry (named so) instead of its own."""

    name: str
    title: str
    path: str
    router: APIRouter
    summary: str = ""
    order: int = 100
    nav_as: str = ""

    @property
    def listed(self) -> bool:
        return not self.nav_as


def discover() -> list[Section]:
    """Every ``section`` exported by a module of ``plinth.ui.pages``, in navigation order."""
    import plinth.ui.pages as pages

    found = []
    for info in pkgutil.iter_modules(pages.__path__):
        module = importlib.import_module(f"{pages.__name__}.{info.name}")
        section = getattr(module, "section", None)
        if isinstance(section, Section):
            found.append(section)
    return sorted(found, key=lambda s: (s.order, s.name))
