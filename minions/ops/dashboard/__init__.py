"""The dashboard: a live web page of one running system, served on ``127.0.0.1``.

Two ways to serve it, one page: ``minions dashboard`` serves the system running in a project
folder from the command's own process, fed through the control socket
(:mod:`minions.ops.control`); ``run(..., dashboard_port=N)`` serves it from the system itself,
as an :class:`~minions.core.runtime.Extension` (:class:`.extension.Dashboard`) fed in-process
through the same requests (:meth:`~minions.ops.control.ControlServer.answer`). Either way:

* :mod:`.channel` — where the data comes from: the control socket, or the system's own
  :class:`~minions.ops.control.ControlServer`;
* :mod:`.monitor` — samples the system's telemetry once a second, follows its lifecycle events
  as they happen, keeps the last minutes of history and the timeline, and fans each update out
  to the open pages;
* :mod:`.series` — turns raw counters into what the page charts (rates, percentiles);
* :mod:`.server` and :mod:`.protocol` — a small HTTP/1.1 server on asyncio (the page, its
  assets, one server-sent-event stream per page, the state, the actions) with bounds on
  everything a client sends;
* :mod:`.access` — the access token, and the checks every request passes (Host, token,
  Origin);
* :mod:`.assets` — the page's files, shipped in the package (nothing is fetched from the
  internet);
* :mod:`.command` — ``minions dashboard`` and ``minions dashboard --url``.
"""
