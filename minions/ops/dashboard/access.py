"""Who may use a dashboard: its access token, and the checks every request passes.

A port on ``127.0.0.1`` is open to every user of the machine (the control socket is not: its
folder is the owner's alone), and to every web page a browser on it opens. So:

* **The token.** Each dashboard draws a random token (256 bits). Every request for the
  system's data or an action must carry it, as ``Authorization: Bearer <token>`` — or, for the
  event stream only, as ``?token=`` (a browser's ``EventSource`` cannot set headers). It is
  compared in constant time. The address handed to the user carries it in the fragment
  (``http://127.0.0.1:PORT/#token=...``), which browsers never send to a server; the page moves
  it to the tab's ``sessionStorage`` and removes it from the address bar. ``minions dashboard``
  prints that address; a system serving its own dashboard writes it to
  ``.minions/run/dashboard.json`` (0600, in the owner-only run folder), where
  ``minions dashboard --url`` reads it. The log carries the address without the token.
* **The Host header** must be ``127.0.0.1:PORT`` or ``localhost:PORT``: a page on another site
  whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own name, and is
  refused.
* **Actions** (restart, stop, redeploy) are POSTs that must also come from the page itself: an
  ``Origin`` of this dashboard, and no ``Sec-Fetch-Site`` other than ``same-origin``.
* **Responses** forbid the page from loading anything from elsewhere (``Content-Security-Policy:
  default-src 'self'``), from being framed, sniffed or cached.

The page's own files need no token: they hold no data.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = ["ACCESS_FILE", "SECURITY_HEADERS", "Access", "read_access_file", "write_access_file"]

#: Where a system serving its own dashboard leaves its address, in ``.minions/run``.
ACCESS_FILE = "dashboard.json"
TOKEN_BYTES = 32

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Access:
    """The token of one dashboard and the checks of its requests (see the module docstring).

    ``port`` is set once the server listens.
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token if token is not None else secrets.token_urlsafe(TOKEN_BYTES)
        self.port = 0

    def __repr__(self) -> str:
        return f"<Access 127.0.0.1:{self.port}>"

    @property
    def url(self) -> str:
        """The dashboard's address, without the token (safe to log)."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def private_url(self) -> str:
        """The address with the token: for the user who runs the system only."""
        return f"{self.url}#token={self.token}"

    def host_allowed(self, host: str | None) -> bool:
        """Whether the request was addressed to this dashboard by its loopback name."""
        return host is not None and host.lower() in self._hosts()

    def token_allowed(self, authorization: str | None, query_token: str | None = None) -> bool:
        """Whether the request carries the token: a bearer header, or ``query_token`` (given
        only for the event stream)."""
        given: str | None = None
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else None
        elif query_token is not None:
            given = query_token
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def origin_allowed(self, origin: str | None, fetch_site: str | None) -> bool:
        """Whether an action comes from this dashboard's own page."""
        if fetch_site is not None and fetch_site != "same-origin":
            return False
        return origin is not None and origin in {f"http://{host}" for host in self._hosts()}

    def _hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}


def access_file(run_dir: Path) -> Path:
    return run_dir / ACCESS_FILE


def write_access_file(run_dir: Path, access: Access) -> Path:
    """Leave the dashboard's address and token for ``minions dashboard --url``: a 0600 file in
    the owner-only ``run_dir``, replaced atomically."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = access_file(run_dir)
    temporary = path.with_name(f".{ACCESS_FILE}.{os.getpid()}")
    data = {"url": access.url, "token": access.token, "pid": os.getpid()}
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path


def read_access_file(run_dir: Path) -> dict[str, Any] | None:
    """What :func:`write_access_file` left, if its writer still runs; otherwise ``None``."""
    try:
        data = json.loads(access_file(run_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), t) for key, t in (("url", str), ("token", str), ("pid", int))
    ):
        return None
    try:
        os.kill(data["pid"], 0)
    except ProcessLookupError:
        return None  # left by a system that was killed
    except PermissionError:
        pass  # alive, someone else's: the caller reads the file only if it could open it
    return data


def remove_access_file(run_dir: Path, access: Access) -> None:
    """Remove the file if it is still this dashboard's (not a newer system's)."""
    path = access_file(run_dir)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("token") == access.token:
            path.unlink()
