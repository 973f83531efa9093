"""The page's files, shipped in the package (``static/``) and served from memory.

Nothing the page uses comes from the internet: its scripts, its stylesheet and the charting
library (uPlot, MIT licence, vendored with its licence under ``static/vendor/``) are read once,
when a server starts, into an allow-list of URL paths. A request for any other path is a 404,
so no path a client sends ever reaches the file system.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

__all__ = ["ASSETS", "Asset", "load_assets"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
#: URL path -> file under ``static/``.
ASSETS = {
    "/": "index.html",
    "/static/app.css": "app.css",
    "/static/app.js": "app.js",
    "/static/graph.js": "graph.js",
    "/static/timeline.js": "timeline.js",
    "/static/vendor/uPlot.iife.min.js": "vendor/uPlot.iife.min.js",
    "/static/vendor/uPlot.min.css": "vendor/uPlot.min.css",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every served file, by URL path."""
    static = resources.files(__package__).joinpath("static")
    loaded: dict[str, Asset] = {}
    for path, name in ASSETS.items():
        suffix = name[name.rindex(".") :]
        loaded[path] = Asset(static.joinpath(name).read_bytes(), _TYPES[suffix])
    return loaded
