"""The transcript viewer page: one self-contained HTML file, or served on 127.0.0.1.

The page is a shell (``templates/viewer.html.j2``) plus its script (``templates/viewer.js``) and the
run's data as JSON inside ``<script type="application/json">`` blocks. The JSON has ``<``, ``>`` and
``&`` written as ``\\u003c``, ``\\u003e`` and ``\\u0026`` so no text can close the block, and the
script renders every string with ``textContent``. A Content-Security-Policy allows only this one
script (by its hash): even markup that slipped through could not run.

Writing streams the records one at a time into the file, so memory holds only the game list.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import jinja2
from markupsafe import Markup

from contagion import __version__
from contagion.errors import UserError
from contagion.experiment.rundir import RunDir
from contagion.experiment.store import Store
from contagion.viewer.data import NOTABLE_DRIFT, game_detail, game_summary

_MARKER = "<!--contagion-data-->"


def json_for_html(value: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` block (no ``<``, ``>`` or ``&``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _script() -> str:
    return resources.files("contagion.viewer").joinpath("templates/viewer.js").read_text(encoding="utf-8")


def _shell(title: str, subtitle: str) -> tuple[str, str]:
    """The page before and after the data blocks."""
    script = _script()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    env = jinja2.Environment(loader=jinja2.PackageLoader("contagion.viewer", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("viewer.html.j2").render(
        title=title, subtitle=subtitle, script=Markup(script), script_hash=f"sha256-{digest}",
        data_marker=Markup(_MARKER))
    before, _, after = html.partition(_MARKER)
    return before, after


def _index_block(summaries: list[dict[str, Any]], lazy: bool) -> str:
    payload = {"games": summaries, "lazy": lazy, "notable": NOTABLE_DRIFT, "version": __version__}
    return f'<script type="application/json" id="index-data">{json_for_html(payload)}</script>\n'


def _titles(store: Store, run_dir: Path) -> tuple[str, str]:
    cfg = store.config() or {}
    counts = store.counts()
    name = str(cfg.get("name", run_dir.name))
    sub = f"{run_dir} · {counts.get('ok', 0)} finished, {counts.get('failed', 0)} failed · contagion {__version__}"
    return f"contagion transcripts — {name}", sub


def _check_nonempty(store: Store, run_dir: Path) -> None:
    counts = store.counts()
    if counts.get("ok", 0) + counts.get("failed", 0) == 0:
        raise UserError(f"{run_dir} holds no games yet; run `contagion run CONFIG --out {run_dir}` first")


def _sorted_records(store: Store) -> Iterator[Any]:
    yield from store.iter_records(status=None)


def _sort_key(s: dict[str, Any]) -> tuple[Any, ...]:
    return (s["model"], s["game"], s["composition"], s["intervention"], s["chat"], s["rep"], s["id"])


def write_viewer(run_dir: Path, out: Path | None = None) -> Path:
    """Write the self-contained viewer (default ``RUN_DIR/viewer.html``) and return its path."""
    run_dir = Path(run_dir)
    with Store.open_existing(run_dir) as store:
        _check_nonempty(store, run_dir)
        title, subtitle = _titles(store, run_dir)
        before, after = _shell(title, subtitle)
        target = Path(out) if out is not None else RunDir(run_dir).viewer
        if target.exists() and target.is_dir():
            target = target / RunDir.VIEWER
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(before)
                summaries = _write_games(fh, store)
                summaries.sort(key=_sort_key)
                fh.write(_index_block(summaries, lazy=False))
                fh.write(after)
            tmp.replace(target)
        except OSError as exc:
            raise UserError(f"cannot write the viewer to {target}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)  # a damaged record or a full disk leaves no half-written page behind
    return target


def _write_games(fh: TextIO, store: Store) -> list[dict[str, Any]]:
    """Stream every game's detail into one JSON object block; return the game list."""
    summaries: list[dict[str, Any]] = []
    fh.write('<script type="application/json" id="games-data">{')
    first = True
    for record in _sorted_records(store):
        detail = game_detail(record)
        fh.write(("" if first else ",") + json_for_html(record.spec_hash) + ":" + json_for_html(detail))
        first = False
        summaries.append(game_summary(record))
    fh.write("}</script>\n")
    return summaries


def viewer_page_lazy(run_dir: Path) -> str:
    """The page for serving: the game list only; each game is fetched from ``game/<id>.json``."""
    with Store.open_existing(run_dir) as store:
        _check_nonempty(store, run_dir)
        title, subtitle = _titles(store, run_dir)
        summaries = sorted((game_summary(r) for r in _sorted_records(store)), key=_sort_key)
    before, after = _shell(title, subtitle)
    return before + _index_block(summaries, lazy=True) + after


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer

    def do_GET(self) -> None:
        if not self.server.host_allowed(self.headers.get("Host")):
            # DNS rebinding: a page on another site resolving its name to 127.0.0.1 must not read the run
            self._send(421, "text/plain; charset=utf-8", b"misdirected request: unknown Host header")
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html", f"/{RunDir.VIEWER}"):
            self._send(200, "text/html; charset=utf-8", self.server.page.encode("utf-8"))
            return
        if path.startswith("/game/") and path.endswith(".json"):
            spec_hash = path[len("/game/"):-len(".json")]
            if spec_hash.isalnum():
                try:
                    with self.server.lock:
                        record = self.server.store.get(spec_hash)
                except UserError as exc:  # a damaged record: say so, as the CLI would
                    self._send(500, "text/plain; charset=utf-8", str(exc).encode("utf-8"))
                    return
                if record is not None:
                    body = json.dumps(game_detail(record), ensure_ascii=False, default=str).encode("utf-8")
                    self._send(200, "application/json; charset=utf-8", body)
                    return
        self._send(404, "text/plain; charset=utf-8", b"not found")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the address
        return


class ViewerServer(ThreadingHTTPServer):
    """Serves one run's viewer on 127.0.0.1 (games loaded on demand from the store)."""

    daemon_threads = True

    def __init__(self, run_dir: Path, port: int = 0) -> None:
        self.page = viewer_page_lazy(run_dir)
        self.store = Store.open_existing(run_dir)
        self.lock = threading.Lock()
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError as exc:
            self.store.close()
            raise UserError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; choose another --port") \
                from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request's Host header names this server (127.0.0.1 or localhost, on its port)."""
        if not host:
            return False
        port = str(self.server_address[1])
        text = host.strip().lower()
        if text.startswith("["):  # [::1]:PORT
            name, _, rest = text.partition("]")
            name, given = name + "]", rest[1:] if rest.startswith(":") else port
        else:
            name, sep, given = text.partition(":")
            given = given if sep else port
        return name in ("127.0.0.1", "localhost", "[::1]") and given == port

    def server_close(self) -> None:
        super().server_close()
        self.store.close()
