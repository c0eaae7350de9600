"""The live page: a small read-only HTTP server that redraws a study's figures as trials finish.

Standard library only (``ThreadingHTTPServer``): the page is static, the browser polls a JSON
endpoint and re-renders with ``Plotly.react`` when the study's version changes. plotly.js comes
from the installed plotly package, never a CDN. Stored text reaches the browser only as JSON
and is put into the page with ``textContent``; the Content-Security-Policy allows the page's own
scripts and same-origin requests, nothing else. Requests whose ``Host`` is not a name the
server knows are refused (see :mod:`dashboards.hosts`), so another web site cannot read the
study through DNS rebinding. A storage that cannot be read (a database dropped or unreachable)
is one line on stderr when it is lost and one when it is back, and meanwhile a 503 whose error
the page shows; the page keeps the figures it drew and asks again.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import threading
from collections.abc import Callable, Collection
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import optuna
import plotly.io
from plotly.offline import get_plotlyjs

from dashboards.analysis import confirmed_architectures, top_architectures
from dashboards.data import StudyTable, check_not_empty, list_studies, table_from_study
from dashboards.figures import FIGURE_IDS, LATENCY, all_figures
from dashboards.hosts import HostCheck
from dashboards.live_script import LIVE_JS
from dashboards.page import STYLE, estimates_text, facts
from hetconv.errors import ConfigError
from search.store.database import STORAGE_ERRORS, storage_reason
from search.store.storage import open_existing
from search.store.studies import open_study

PROG = "python -m dashboards.serve"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8050
POLL_SECONDS = 3  # how often the page asks for news

_POLICY = ("default-src 'none'; script-src 'self'; connect-src 'self'; "
           "style-src 'self' 'unsafe-inline'; img-src 'self' data:")

_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>HetNAS live</title>
<style>{STYLE}
nav select {{ font-size: 1em; }} #status {{ color: #777; margin-left: 1em; }}</style>
<script src="/static/plotly.min.js"></script>
</head><body>
<nav><label>study <select id="studies"></select></label><span id="status">loading…</span></nav>
<h1 id="title">HetNAS study</h1>
<p class="facts" id="facts"></p>
<p>Accuracy is the last validation accuracy. Over-budget proposals were never trained: they
appear as red ticks in the strip under the scatter, at their paper MACs. The page redraws
as trials finish.</p>
{"".join(f'<div class="figure" id="{key}"{" hidden" if key == LATENCY else ""}></div>'
         for key in FIGURE_IDS)}
<h2>Top architectures (single runs; 95% Wilson intervals beneath)</h2>
<div id="top"></div>
<h2>Confirmed over seeds</h2>
<div id="confirmed"></div>
<section id="oneshot" hidden><h2>Supernet estimates</h2><p id="estimates"></p></section>
<script src="/static/live.js" data-poll="{POLL_SECONDS}"></script>
</body></html>
"""


def study_json(table: StudyTable, top: int = 10) -> str:
    """What the live page draws for one study, as JSON text: figures, facts, top table.

    ``latency`` says whether the trials have predicted latencies: the page then shows the
    latency scatter (only present in ``figures`` then) and a latency column in the table.
    ``oneshot`` says whether the tables get a supernet-estimate column; ``estimates`` is the
    one-shot study's note on its estimates (as the report's), null for a standard study.
    """
    meta = {
        "name": table.name, "version": table.version, "trials": len(table),
        "facts": facts(table), "latency": table.has_latency, "oneshot": table.oneshot,
        "estimates": estimates_text(table),
        "top": [{**dataclasses.asdict(row), "parts_summary": row.parts_summary}
                for row in top_architectures(table, top)],
        "confirmed": [{**dataclasses.asdict(row), "runs": row.runs,
                       "parts_summary": row.parts_summary}
                      for row in confirmed_architectures(table)],
    }
    figures = ", ".join(f"{json.dumps(key)}: {plotly.io.to_json(fig)}"
                        for key, fig in all_figures(table).items())
    return json.dumps(meta)[:-1] + f', "figures": {{{figures}}}}}'


class LiveStudies:
    """The studies of one storage as the live page asks for them, read incrementally.

    Each study stays open, so Optuna's storage cache re-reads only the trials that are new or
    were unfinished; the figures are redrawn only when the study's version changed.
    """

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage = storage
        self._studies: dict[str, optuna.Study] = {}
        self._answers: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()

    def listing_json(self, default: str) -> bytes:
        listing = [dataclasses.asdict(s) for s in list_studies(self.storage)]
        return json.dumps({"default": default, "studies": listing}).encode()

    def table(self, name: str | None) -> StudyTable:
        """The study's trials now (the newest study when ``name`` is None)."""
        with self._lock:
            if name is None:
                name = open_study(self.storage, None).study_name
            try:
                return table_from_study(self._study(name))
            except KeyError:  # deleted (and perhaps made again) since it was opened
                self._studies.pop(name, None)
                return table_from_study(self._study(name))

    def study_json(self, name: str) -> bytes:
        """The study's JSON (see :func:`study_json`); :class:`ConfigError` if there is none."""
        table = self.table(name)
        with self._lock:
            answer = self._answers.get(name)
            if answer is None or answer[0] != table.version:
                answer = (table.version, study_json(table).encode())
                self._answers[name] = answer
            return answer[1]

    def _study(self, name: str) -> optuna.Study:
        if name not in self._studies:
            self._studies[name] = open_study(self.storage, name)
        return self._studies[name]


class DashboardServer(ThreadingHTTPServer):
    """Serves the live page of one storage; ``default_study`` is shown first.

    Requests are answered for the ``Host`` names of ``HostCheck.for_bind(host, allowed_hosts)``.
    """

    daemon_threads = True

    def __init__(self, studies: LiveStudies, default_study: str, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, allowed_hosts: Collection[str] = ()) -> None:
        self.studies = studies
        self.default_study = default_study
        self.hosts = HostCheck.for_bind(host, allowed_hosts)
        self._plotlyjs: bytes | None = None
        self._storage_lost: str | None = None  # why the storage cannot be read, while it cannot
        self._storage_lock = threading.Lock()
        if ":" in host:  # an IPv6 address such as :: or ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host!s}]" if self.address_family == socket.AF_INET6 else f"{host!s}"
        return f"http://{shown}:{port}/"

    def plotlyjs(self) -> bytes:
        if self._plotlyjs is None:
            self._plotlyjs = get_plotlyjs().encode()
        return self._plotlyjs

    def storage_read(self, why: str | None) -> None:
        """Note whether the storage could be read (``why`` not, else None); say it on stderr
        once when that changes, not once a poll."""
        with self._storage_lock:
            if (why is None) == (self._storage_lost is None):
                return
            self._storage_lost = why
        print(f"{PROG}: the storage cannot be read ({why}); the page says so and asks again"
              if why is not None else f"{PROG}: the storage can be read again",
              file=sys.stderr, flush=True)


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "HetNAS"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Quiet: a line per poll would bury the address the user needs."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        refused = self.server.hosts.refusal(self.headers.get("Host"))
        if refused is not None:
            self._send(*refused, "text/plain")
            return
        path, _, query = self.path.partition("?")  # urlsplit raises on targets such as //[
        if path == "/":
            self._send(HTTPStatus.OK, _PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/static/plotly.min.js":
            self._send(HTTPStatus.OK, self.server.plotlyjs(), "text/javascript", cache=True)
        elif path == "/static/live.js":
            self._send(HTTPStatus.OK, LIVE_JS.encode(), "text/javascript")
        elif path == "/api/studies":
            self._send_read(lambda: self.server.studies.listing_json(self.server.default_study))
        elif path == "/api/study":
            name = parse_qs(query).get("name", [self.server.default_study])[0]
            self._send_read(lambda: self.server.studies.study_json(name))
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def _send_read(self, read: Callable[[], bytes]) -> None:
        """The JSON ``read`` gives; 404 for a missing study, 503 for a storage that cannot be
        read (a connection failure, a dropped database), each with its one-line error."""
        try:
            body = read()
        except ConfigError as error:
            self._send_error(HTTPStatus.NOT_FOUND, str(error))
        except STORAGE_ERRORS as error:
            why = storage_reason(error)
            self.server.storage_read(why)
            self._send_error(HTTPStatus.SERVICE_UNAVAILABLE,
                             f"the storage cannot be read ({why}); asking again")
        else:
            self.server.storage_read(None)
            self._send(HTTPStatus.OK, body, "application/json")

    def _send_error(self, status: HTTPStatus, error: str) -> None:
        self._send(status, json.dumps({"error": error}).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", _POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)


def make_server(storage_url: str, study_name: str | None = None, host: str = DEFAULT_HOST,
                port: int = DEFAULT_PORT, allowed_hosts: Collection[str] = ()) -> DashboardServer:
    """Check the storage and the study, then bind; every user error is a :class:`ConfigError`.

    ``port`` 0 picks a free port (tests use it); ``server.url`` says which. ``allowed_hosts``:
    the names the page is reached by besides loopback and ``host`` (see :mod:`dashboards.hosts`).
    """
    studies = LiveStudies(open_existing(storage_url))
    table = studies.table(study_name)
    check_not_empty(table)
    try:
        return DashboardServer(studies, table.name, host, port, allowed_hosts)
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}; pass "
                          f"another --port or --host") from None

