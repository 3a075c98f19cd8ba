"""Fixtures for the real-browser lesson tests: a private JupyterLab and a headless Chromium.

What a learner sees is JupyterLab rendering a notebook, so these tests drive exactly that:

* ``lab_server`` (session) starts ``jupyter lab`` from *this* Python environment on
  127.0.0.1, on a free port, with a random token. Every directory Jupyter writes to
  (config, data, runtime, settings, workspaces, even ``HOME``) is a temporary one, so a
  test run never touches the user's home. The environment's own ``share/jupyter`` stays
  on the data path: that is where the ipywidgets front-end extension lives. The server's
  root is a temporary COPY of ``notebooks/`` (and of the harness fixtures), so running the
  lessons never rewrites the committed files.
* ``browser`` (session) launches Debian's Chromium through Python Playwright; it never
  downloads a browser (no ``playwright install``) and has its background networking off.
* ``lab`` (per test) is a fresh browser context + page wrapped in :class:`LabPage`, which
  knows how to open a notebook, restart its kernel and run every cell, wait for the
  result, collect what rendered, and take screenshots.

Anything missing (Chromium, Playwright, a JupyterLab that starts) makes the tests SKIP
with the reason, never fail. Every wait is bounded; the server and the browser are always
stopped, also when a test fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Repository folders the lessons read through relative paths (``../data/pods/...``).
LESSON_DATA = ("data",)

CHROMIUM = Path(os.environ.get("MESHLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 6000}

#: Bounded waits (seconds); each can be raised through the environment on a slow machine.
SERVER_START_S = float(os.environ.get("MESHLAB_BROWSER_SERVER_TIMEOUT", "60"))
NOTEBOOK_OPEN_S = float(os.environ.get("MESHLAB_BROWSER_OPEN_TIMEOUT", "90"))
NOTEBOOK_RUN_S = float(os.environ.get("MESHLAB_BROWSER_NOTEBOOK_TIMEOUT", "300"))
WIDGET_RENDER_S = 60.0

WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"

# JupyterLab user settings for the test server (they win over any overrides.json):
# every cell in the DOM (no virtualised "windowing"), no restart dialog, no news pop-up.
LAB_USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "scrollPastEnd": False},
    "@jupyterlab/apputils-extension/sessionDialogs": {"skipKernelRestartDialog": True},
    "@jupyterlab/apputils-extension/notification": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
}

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def screenshot_dir() -> Path:
    """Where screenshots go: ``$MESHLAB_SCREENSHOTS`` or ``artifacts/browser/`` (gitignored)."""
    folder = Path(os.environ.get("MESHLAB_SCREENSHOTS") or REPO / "artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- timings


@dataclass
class Timings:
    """Seconds spent per phase, printed at the end of the run (``pytest_terminal_summary``)."""

    started: float | None = None
    finished: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    notebooks: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # notebook -> what was checked

    def as_dict(self) -> dict[str, Any]:
        total = None
        if self.started is not None:
            total = (self.finished or time.monotonic()) - self.started
        return {
            "total_s": total,
            "phases_s": self.phases,
            "notebooks_s": self.notebooks,
            "checked": self.notes,
        }


TIMINGS = Timings()


def _mark_started() -> None:
    if TIMINGS.started is None:
        TIMINGS.started = time.monotonic()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how long the browser run took, per notebook and in total."""
    if TIMINGS.started is None:
        return
    data = TIMINGS.as_dict()
    write = terminalreporter.write_line
    terminalreporter.section("meshlab browser timings")
    for name, seconds in data["phases_s"].items():
        write(f"{name:<40} {seconds:7.1f} s")
    for name, parts in data["notebooks_s"].items():
        detail = "  ".join(f"{k} {v:.1f}" for k, v in parts.items() if k != "total")
        write(f"{name:<40} {parts.get('total', 0.0):7.1f} s" + (f"   ({detail})" * bool(detail)))
        if name in data["checked"]:
            write(f"{'':<40}           {data['checked'][name]}")
    write(f"{'whole browser run':<40} {data['total_s']:7.1f} s")
    with contextlib.suppress(OSError):
        (screenshot_dir() / "timings.json").write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- the server


@dataclass
class LabServer:
    """A running private JupyterLab."""

    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the server's root_dir (temporary copies of the notebooks)
    log: Path
    labextensions: str  # `jupyter labextension list` as this server sees it
    process: subprocess.Popen[bytes]

    def api(self, method: str, path: str, timeout: float = 10.0) -> Any:
        """Call the Jupyter REST API (token auth, loopback only); JSON answer or None."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in {"POST", "PUT", "PATCH"} else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def delete_sessions(self) -> None:
        """Shut down every kernel session: a session survives a page reload otherwise."""
        for session in self.api("GET", "/api/sessions") or []:
            with contextlib.suppress(urllib.error.HTTPError):
                self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _private_env(base: Path) -> dict[str, str]:
    """An environment whose Jupyter (and kernel) writes only below ``base``."""
    dirs = {
        "HOME": "home",
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "IPYTHONDIR": "home/.ipython",
        "XDG_CONFIG_HOME": "home/.config",
        "XDG_CACHE_HOME": "home/.cache",
        "XDG_DATA_HOME": "home/.local/share",
    }
    env = dict(os.environ)
    for name, sub in dirs.items():
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(base / sub)
    if "MPLCONFIGDIR" not in os.environ:
        (base / "matplotlib").mkdir(exist_ok=True)
        env["MPLCONFIGDIR"] = str(base / "matplotlib")
    # sys.prefix/share/jupyter (the ipywidgets extension, the python3 kernel) stays on the
    # data path; JUPYTER_PATH from the caller's shell could shadow it, so drop it.
    env.pop("JUPYTER_PATH", None)
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH", "JPY_SESSION_NAME"):
        env.pop(key, None)
    return env


def _write_lab_settings(settings_dir: Path) -> None:
    for name, values in LAB_USER_SETTINGS.items():
        target = settings_dir / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values, indent=2))


def _copy_notebooks(root: Path) -> None:
    """Copy the lessons (and the data they read as ``../data/...``) below ``root``.

    The copy keeps the checkout's layout, so paths relative to a notebook still work, and
    whatever JupyterLab saves while the tests run lands in the copy, never in the repo.
    """
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    if NOTEBOOKS.is_dir():
        shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=ignore)
    else:
        (root / "notebooks").mkdir()
    for sibling in LESSON_DATA:
        if (REPO / sibling).is_dir():
            shutil.copytree(REPO / sibling, root / sibling, ignore=ignore)
    shutil.copytree(FIXTURES, root / "fixtures", ignore=ignore)


def _stop_server(
    server: subprocess.Popen[bytes], url: str, token: str, *, graceful: bool = True
) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure it is gone."""
    if graceful and server.poll() is None:
        with contextlib.suppress(Exception):
            request = urllib.request.Request(
                f"{url}/api/shutdown",
                method="POST",
                data=b"",
                headers={"Authorization": f"token {token}"},
            )
            urllib.request.urlopen(request, timeout=10).close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
    if server.poll() is None:
        server.kill()
        server.wait(timeout=10)


def _kill_leftover_kernels(runtime_dir: Path) -> None:
    """Kernels of OUR server only (their connection file is in our runtime dir), by pid."""
    marker = str(runtime_dir)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "ipykernel" in cmdline and marker in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def _start_server(
    base: Path, root: Path, env: dict[str, str], token: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start JupyterLab; retry on another port if the chosen one was taken meanwhile."""
    last_error = ""
    for attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = base / f"jupyter-lab-{attempt}.log"
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run commands
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        with log.open("wb") as out:
            process = subprocess.Popen(
                cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                request = urllib.request.Request(
                    f"{url}/api/status", headers={"Authorization": f"token {token}"}
                )
                urllib.request.urlopen(request, timeout=5).close()
                return process, url, log
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
        text = log.read_text(errors="replace")
        _stop_server(process, url, token, graceful=False)
        last_error = "\n".join(text.splitlines()[-25:])
        if "address already in use" not in text.lower():
            break
    pytest.skip(
        f"JupyterLab did not start within {SERVER_START_S:g} s "
        f"(set MESHLAB_BROWSER_SERVER_TIMEOUT to wait longer); its log ends with:\n{last_error}"
    )


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A private JupyterLab serving temporary copies of the lessons and fixtures."""
    _mark_started()
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip(f"jupyterlab is not installed in {sys.prefix}: pip install -e '.[lab]'")
    began = time.monotonic()
    base = tmp_path_factory.mktemp("meshlab-lab")
    root = base / "root"
    root.mkdir()
    _copy_notebooks(root)
    env = _private_env(base)
    _write_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "jupyter", "labextension", "list"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        labextensions = ANSI.sub("", listed.stdout + listed.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        labextensions = f"(jupyter labextension list failed: {exc})"
    token = secrets.token_hex(24)
    process, url, log = _start_server(base, root, env, token)
    server = LabServer(url, token, root, log, labextensions, process)
    TIMINGS.phases["start JupyterLab"] = time.monotonic() - began
    try:
        yield server
    finally:
        _stop_server(process, url, token)
        _kill_leftover_kernels(Path(env["JUPYTER_RUNTIME_DIR"]))
        TIMINGS.finished = time.monotonic()


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (one for the whole run)."""
    _mark_started()
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` "
            "(or set MESHLAB_CHROMIUM to a Chromium binary)"
        )
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"Python Playwright is not importable ({exc}): pip install playwright")
    began = time.monotonic()
    home = tmp_path_factory.mktemp("chromium-home")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}  # fmt: skip
    driver = sync_playwright().start()
    try:
        try:
            chromium = driver.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, env=env, timeout=60_000
            )
        except PlaywrightError as exc:
            pytest.skip(f"Chromium at {CHROMIUM} did not start under Playwright: {exc}")
        TIMINGS.phases["start Chromium"] = time.monotonic() - began
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        driver.stop()
        TIMINGS.finished = time.monotonic()


# --------------------------------------------------------------------------- one page

_FIND_PANEL = """
const findPanel = (path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  return Array.from(app.shell.widgets('main')).find(
    (w) => w.context && w.context.path === path && w.content && w.sessionContext) || null;
};
"""

_JS_READY = (
    _FIND_PANEL
    + """
return ((path) => {
  const panel = findPanel(path);
  const session = panel && panel.sessionContext.session;
  // Ready = file loaded, every cell widget built, kernel started and idle.
  return !!(panel && panel.context.isReady && panel.sessionContext.isReady
            && panel.content.widgets.length === panel.model.cells.length
            && session && session.kernel && session.kernel.status === 'idle');
})"""
)

_JS_RUN_ALL = (
    _FIND_PANEL
    + """
return (async (path) => {
  const app = window.jupyterapp;
  const panel = findPanel(path);
  app.shell.activateById(panel.id);
  await panel.sessionContext.ready;
  // Clear first: stale execution counts from the file must not look like a finished run.
  await app.commands.execute('notebook:clear-all-cell-outputs');
  window.__meshlabRun = null;
  app.commands.execute('notebook:restart-run-all').then(
    (r) => { window.__meshlabRun = 'done: ' + r; },
    (e) => { window.__meshlabRun = 'failed: ' + e; });
  return true;
})"""
)

_JS_STATE = (
    _FIND_PANEL
    + """
return ((path) => {
  const panel = findPanel(path);
  if (!panel) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    const source = cell.model.sharedModel.getSource();
    const errors = cell.model.outputs.toJSON().filter((o) => o.output_type === 'error')
      .map((o) => o.ename + ': ' + o.evalue);
    cells.push({index, count: cell.model.executionCount ?? null, blank: !source.trim(),
                head: source.split('\\n')[0].slice(0, 80), errors});
  });
  return {kernel: kernel ? kernel.status : null, run: window.__meshlabRun ?? null, cells};
})"""
)

_JS_REPORT = (
    _FIND_PANEL
    + """
return ((path) => {
  const panel = findPanel(path);
  const strip = (s) => String(s).replace(/\\x1b\\[[0-9;]*[A-Za-z]/g, '');
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    const errors = [];
    for (const o of cell.model.outputs.toJSON()) {
      if (o.output_type === 'error') {
        errors.push(strip(o.ename + ': ' + o.evalue + '\\n' + (o.traceback || []).join('\\n')));
      }
    }
    // An error output is rendered as stderr text too: report the page's own only when
    // the model has none (e.g. a traceback printed by hand or by a widget callback).
    const modelErrors = errors.length;
    const outputs = Array.from(cell.node.querySelectorAll('.jp-OutputArea-output'));
    let loading = 0;
    for (const out of outputs) {
      const mime = out.getAttribute('data-mime-type') || '';
      const text = out.textContent || '';
      const shown = mime === 'application/vnd.jupyter.stderr' && /Traceback/.test(text)
        || mime === 'application/vnd.jupyter.error';
      if (shown && !modelErrors) {
        errors.push('shown in the page: ' + text.slice(-3000));
      }
      if (/Error displaying widget/.test(text)) {
        errors.push('widget: ' + text.trim().slice(0, 300));
      }
      if (text.trim() === 'Loading widget...') loading += 1;
    }
    const widgets = cell.node.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets').length;
    const images = Array.from(cell.node.querySelectorAll('.jp-OutputArea-output img')).map(
      (img) => ({loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth}));
    cells.push({index, count: cell.model.executionCount ?? null, errors, widgets, images,
                loading, head: cell.model.sharedModel.getSource().split('\\n')[0].slice(0, 80)});
  });
  return cells;
})"""
)

_JS_SCROLLER = (
    _FIND_PANEL
    + """
return ((args) => {
  const [path, top] = args;
  const panel = findPanel(path);
  // The notebook scrolls inside its "outer" element, not the page and not the panel.
  const node = panel.content.node.querySelector('.jp-WindowedPanel-outer') || panel.content.node;
  if (top !== null) node.scrollTop = top;
  return {top: node.scrollTop, height: node.scrollHeight, view: node.clientHeight};
})"""
)


def _js(body: str) -> str:
    """Wrap a script that returns a function, so Playwright can call it with one argument."""
    return f"(arg) => (() => {{ {body} }})()(arg)"


@dataclass
class CellReport:
    """What one code cell shows in the browser after the run."""

    index: int  # position among ALL cells of the notebook (as in the .ipynb file)
    count: int | None  # execution count
    errors: list[str]
    widgets: int  # live widget roots in the cell's outputs
    images: list[dict[str, Any]]  # each rendered <img>: {"loaded": bool, "width": int}
    loading: int  # outputs still saying "Loading widget..."
    head: str  # first line of the source, for messages


class LabPage:
    """One browser page showing one notebook of the test server."""

    def __init__(self, server: LabServer, page: Any, name: str) -> None:
        self.server = server
        self.page = page
        self.name = name
        self.path = ""
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))

    # -- opening and running ----------------------------------------------------------

    def open(self, path: str) -> None:
        """Open ``path`` (relative to the server root) with a fresh kernel session."""
        self.path = path
        self.server.delete_sessions()
        workspace = f"t{secrets.token_hex(4)}"  # a fresh workspace restores nothing else
        self.page.goto(
            f"{self.server.url}/lab/workspaces/{workspace}/tree/{path}?token={self.server.token}",
            wait_until="domcontentloaded",
            timeout=NOTEBOOK_OPEN_S * 1000,
        )
        try:
            self.page.wait_for_function(
                _js(_JS_READY), arg=path, timeout=NOTEBOOK_OPEN_S * 1000, polling=250
            )
        except Exception as exc:  # Playwright's TimeoutError: say what was not ready
            state = self.state() if self.page.evaluate("() => !!window.jupyterapp") else None
            raise AssertionError(
                f"{path}: JupyterLab did not show the notebook with an idle kernel within "
                f"{NOTEBOOK_OPEN_S:g} s (state: {state}; {exc.__class__.__name__}); "
                "browser console, last lines:\n" + "\n".join(self.console[-15:])
            ) from None

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(_js(_JS_STATE), self.path)

    def _accept_dialogs(self) -> None:
        """Accept any dialog (restart kernel? select kernel?) that would block the run."""
        button = self.page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
        if button.count():
            button.first.click(timeout=5000)

    def run_all(self, budget_s: float = NOTEBOOK_RUN_S) -> dict[str, Any]:
        """Restart the kernel and run all cells; wait until every code cell has executed.

        Returns the final state. Stops early when a cell raised (JupyterLab then stops
        running the remaining cells); raises AssertionError when the budget runs out.
        """
        self.page.evaluate(_js(_JS_RUN_ALL), self.path)
        deadline = time.monotonic() + budget_s
        idle_polls = 0
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._accept_dialogs()
            state = self.state()
            if any(cell["errors"] for cell in state["cells"]) and state["run"]:
                return state
            executed = all(cell["count"] for cell in state["cells"] if not cell["blank"])
            if executed and state["run"] and state["kernel"] == "idle":
                idle_polls += 1
                if idle_polls >= 2:
                    return state
            else:
                idle_polls = 0
            time.sleep(0.5)
        pending = [c for c in state.get("cells", []) if not c["blank"] and not c["count"]]
        first = pending[0] if pending else None
        raise AssertionError(
            f"{self.path}: not every cell executed within {budget_s:.0f} s "
            f"(kernel {state.get('kernel')}, run-all command {state.get('run') or 'pending'}, "
            f"{len(pending)} cells pending"
            + (f", first is cell {first['index']}: {first['head']!r}" if first else "")
            + "); raise MESHLAB_BROWSER_NOTEBOOK_TIMEOUT if the machine is just slow.\n"
            + "browser console, last lines:\n"
            + "\n".join(self.console[-15:])
        )

    def report(self, timeout_s: float = WIDGET_RENDER_S) -> list[CellReport]:
        """Per code cell: errors, live widgets, images; waits out "Loading widget..."."""
        deadline = time.monotonic() + timeout_s
        while True:
            cells = [CellReport(**c) for c in self.page.evaluate(_js(_JS_REPORT), self.path)]
            settled = not any(c.loading for c in cells) and all(
                image["loaded"] for c in cells for image in c.images
            )
            if settled or time.monotonic() > deadline:
                return cells
            time.sleep(0.5)

    # -- looking at it ----------------------------------------------------------------

    def screenshots(self, stem: str, max_parts: int = 20) -> list[Path]:
        """Screenshot the whole notebook: the panel scrolls internally, so page by page."""
        folder = screenshot_dir()
        for old in folder.glob(f"{stem}-[0-9][0-9].png"):
            old.unlink()
        geometry = self.page.evaluate(_js(_JS_SCROLLER), [self.path, 0])
        step = max(int(geometry["view"]) - 40, 200)
        paths = []
        top = 0
        for part in range(1, max_parts + 1):
            self.page.evaluate(_js(_JS_SCROLLER), [self.path, top])
            self.page.wait_for_timeout(150)
            target = folder / f"{stem}-{part:02d}.png"
            self.page.screenshot(path=str(target))
            paths.append(target)
            top += step
            if top >= geometry["height"] - 40:
                break
        self.page.evaluate(_js(_JS_SCROLLER), [self.path, 0])
        return paths

    @property
    def screenshot_dir(self) -> Path:
        return screenshot_dir()

    def scroll_to(self, locator: Any) -> Any:
        """Off-screen elements are "not visible" to Playwright: attach, then scroll to them."""
        locator.wait_for(state="attached", timeout=30_000)
        locator.scroll_into_view_if_needed(timeout=30_000)
        return locator


@pytest.fixture(scope="session")
def browser_timings() -> Timings:
    """Where tests record seconds per notebook; printed in the terminal summary."""
    return TIMINGS


@contextlib.contextmanager
def _lab_page(browser: Any, lab_server: LabServer, name: str,
              viewport: dict[str, int]) -> Iterator[LabPage]:
    """A fresh page (own context: own cookies, own storage) on the private JupyterLab."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield LabPage(lab_server, page, name)
    finally:
        with contextlib.suppress(Exception):
            context.close()
        with contextlib.suppress(Exception):
            lab_server.delete_sessions()


@pytest.fixture
def lab(browser: Any, lab_server: LabServer, request: pytest.FixtureRequest) -> Iterator[LabPage]:
    """A fresh page on the private JupyterLab, in a wide window (:data:`VIEWPORT`)."""
    with _lab_page(browser, lab_server, request.node.name, VIEWPORT) as page:
        yield page


#: A narrow JupyterLab: a 1280 px wide window, room for the file browser beside a notebook.
NARROW_VIEWPORT = {"width": 1280, "height": 2400}


@pytest.fixture
def narrow_lab(browser: Any, lab_server: LabServer,
               request: pytest.FixtureRequest) -> Iterator[LabPage]:
    """A fresh page on the private JupyterLab in a 1280 px wide window
    (:data:`NARROW_VIEWPORT`)."""
    with _lab_page(browser, lab_server, request.node.name, NARROW_VIEWPORT) as page:
        yield page
