"""A real JupyterLab / Notebook 7 server and a headless Debian Chromium, for e2e tests.

Offline and silent: every Jupyter directory points at a temp folder of the
server's, news, update checks and the extension manager are off, and Chromium's
background networking is disabled. One server per app serves every test of a
process (:func:`jupyter_server`), each in a folder of its own; it stops when the
process exits, or before at :func:`stop_servers`. Everything the e2e tests need
to start them is in this file.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI has no usable sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: app -> (module to run, page of a notebook: its path on the server, and in JupyterLab a workspace)
APPS = {"lab": ("jupyterlab", "/lab/workspaces/{workspace}/tree/{path}"),
        "notebook7": ("notebook", "/notebooks/{path}")}

_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {"enabled": False},
}


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM_PATH")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Server:
    """One running server of an app, shared by the tests of a session."""

    app: str
    proc: subprocess.Popen
    url: str
    token: str
    tmp: Path  # config, data, runtime, settings, workspaces, the log; and root/
    tests: int = 0  # folders handed out so far
    folder: str = ""  # the folder of the test using the server now (tests run one at a time)

    @property
    def root(self) -> Path:
        return self.tmp / "root"

    @property
    def log_path(self) -> Path:
        return self.tmp / "server.log"


#: The running server of each app. A start takes 3-4 s, and nine e2e tests use one: each
#: test gets a folder (and a JupyterLab workspace) of its own on the shared server instead.
_SERVERS: dict[str, _Server] = {}


def _api(server: _Server, method: str, path: str) -> object:
    req = urllib.request.Request(f"{server.url}{path}", method=method,
                                 headers={"Authorization": f"token {server.token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def _start(app: str) -> _Server:
    module = APPS[app][0]
    tmp = Path(tempfile.mkdtemp(prefix=f"aw-e2e-{app}-"))
    (tmp / "root").mkdir()
    for rel, content in _SETTINGS.items():
        path = tmp / "user-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), IPYTHONDIR=str(tmp / "ipython"),
        HF_HUB_OFFLINE="1",
    )
    cmd = [
        sys.executable, "-m", module, "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp / 'root'}",
        "--ServerApp.terminals_enabled=False", "--ServerApp.allow_root=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        # a safety net for a server left behind by a killed pytest; one between two tests
        # that use it is restarted by jupyter_server
        "--ServerApp.shutdown_no_activity_timeout=600",
    ]
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp / "root", env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = _Server(app, proc, f"http://127.0.0.1:{port}", token, tmp)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited early:\n{server.log_path.read_text()}")
            try:
                _api(server, "GET", "/api/status")
                return server
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{module} did not answer /api/status within 90 s")
            time.sleep(0.25)
    except BaseException:
        _stop(server)
        raise


def _stop(server: _Server) -> None:
    # SIGTERM lets jupyter_server stop its kernels (SIGINT would prompt on stdin)
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(proc.pid, signal.SIGKILL)


def _shut_kernels(server: _Server, folder: Path) -> None:
    """Shut down every session and kernel of the server through its API, and wait until the
    server lists none and the kernel processes of ``folder`` are gone: the next test starts
    with none of this one's. A kernel is asked again while it is listed (a busy one may not
    answer the first time); only a process the server no longer manages is killed, since the
    server restarts a managed kernel that dies."""
    def listed(kind: str) -> list:
        with contextlib.suppress(OSError, ValueError):
            return _api(server, "GET", f"/api/{kind}")
        return []

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for kind in ("sessions", "kernels"):
            for item in listed(kind):
                with contextlib.suppress(OSError, ValueError):  # gone meanwhile, or slow: asked again
                    _api(server, "DELETE", f"/api/{kind}/{item['id']}")
        if not listed("kernels") and not kernel_pids(folder):
            return
        time.sleep(0.2)
    if listed("kernels"):
        raise RuntimeError(f"the {server.app} server kept its kernels after 30 s: {listed('kernels')}")
    for pid in kernel_pids(folder):  # a process the server let go of but that did not exit
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _retire(server: _Server, log: Path | None) -> None:
    """Stop ``server`` and remove its folder, its log copied to ``log`` first (when given)."""
    _stop(server)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(server.log_path, log)
    shutil.rmtree(server.tmp, ignore_errors=True)


def stop_servers(artifacts: Path | None = None) -> None:
    """Stop every server :func:`jupyter_server` started (the e2e conftest does, at the session's
    end; scripts at their exit), copying each log to ``artifacts/server-<app>.log``."""
    while _SERVERS:
        _, server = _SERVERS.popitem()
        _retire(server, None if artifacts is None else artifacts / f"server-{server.app}.log")


atexit.register(stop_servers)  # benchmarks and docs/make_pictures.py exit without calling it


@contextmanager
def jupyter_server(app: str, artifacts: Path) -> Iterator[tuple[str, str, Path]]:
    """A folder of this test's own on the app's server; yield (base url, token, folder).

    The server starts on first use and serves the session's later tests too (see
    :func:`stop_servers`). Notebook names given to :func:`open_notebook` are relative to the
    folder; in JupyterLab each folder gets a workspace of its own, so a test never reopens
    the previous one's notebooks. At the end every kernel is shut down, and the server's log
    so far is copied to ``artifacts/server-<app>.log``.
    """
    server = _SERVERS.get(app)
    if server is None or server.proc.poll() is not None:  # first use, or stopped when idle
        if server is not None:  # its log goes with it: keep it beside the next one's
            _retire(server, artifacts / f"server-{app}.before-restart.log")
        server = _SERVERS[app] = _start(app)
    server.tests += 1
    server.folder = f"test{server.tests}"
    folder = server.root / server.folder
    folder.mkdir()
    try:
        yield server.url, server.token, folder
    finally:
        server.folder = ""
        _shut_kernels(server, folder)
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(server.log_path, artifacts / f"server-{app}.log")


@dataclass
class PageWatch:
    """What a page did that a test forbids, recorded by :func:`watch_page`."""

    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt texts (dismissed)
    errors: list[str] = field(default_factory=list)  # console errors
    external: list[str] = field(default_factory=list)  # requests outside the allowed prefixes


def watch_page(page, allowed: tuple[str, ...] | None = None) -> PageWatch:
    """Record the page's dialogs (dismissing them), console errors and, given ``allowed`` URL
    prefixes, every request to anything else."""
    seen = PageWatch()
    page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    if allowed is not None:
        page.on("request", lambda r: None if r.url.startswith(allowed) else seen.external.append(r.url))
    return seen


def assert_inert(page, element) -> None:
    """Token text under ``element`` stayed text: no markup was parsed, no script ran (the
    hostile tokens set ``window.__pwned`` or load ``img[src=x]``), and the invisible bidi and
    zero-width characters were replaced by their names before reaching the page."""
    assert element.locator("img, script").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    text = element.evaluate("e => e.textContent")
    assert "\u202e" not in text
    assert "\u200b" not in text


def write_notebook(path: Path, sources: list[str]) -> None:
    """A minimal nbformat-4 notebook with an explicit kernelspec (else Lab asks for one)."""
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                    "language": "python"}},
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
             "outputs": [], "source": src}
            for i, src in enumerate(sources)
        ],
    }
    path.write_text(json.dumps(nb))


def open_notebook(page, url: str, token: str, app: str, name: str, timeout_ms: int = 90_000) -> None:
    """Open notebook ``name`` in ``app`` and wait (``timeout_ms``) for an idle kernel."""
    from playwright.sync_api import expect

    folder = next((s.folder for s in _SERVERS.values() if s.url == url), "")
    path = f"{folder}/{name}" if folder else name
    page.goto(f"{url}{APPS[app][1].format(workspace=folder or 'default', path=path)}?token={token}")
    toolbar = page.locator(".jp-NotebookPanel-toolbar")
    expect(toolbar.get_by_role("button", name="Python 3 (ipykernel)")).to_be_visible(timeout=timeout_ms)
    expect(toolbar.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=timeout_ms)


def run_cell(page, index: int) -> None:
    """Run the notebook's cell ``index`` (0-based) as a user does: into its editor, Ctrl+Enter."""
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")


def open_and_run_all(page, url: str, token: str, app: str, name: str, timeout_ms: int = 90_000) -> None:
    """Open notebook ``name`` in ``app``, wait (``timeout_ms``) for an idle kernel, then Run All Cells."""
    open_notebook(page, url, token, app, name, timeout_ms)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def kernel_pids(root: Path) -> list[int]:
    """The ipykernel processes started by the server whose notebooks live in ``root``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            if b"ipykernel_launcher" in cmd and (proc / "cwd").resolve() == root.resolve():
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MiB: now (``VmRSS``) or its peak (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def server_log(folder: Path) -> str:
    """What the server of ``folder`` (from :func:`jupyter_server`) and its kernels have written
    so far (kernels' stderr included)."""
    servers = [s for s in _SERVERS.values() if folder.is_relative_to(s.root)]
    if not servers:
        raise RuntimeError(f"folder: {folder} is not on a running server of jupyter_server's")
    return servers[0].log_path.read_text(errors="replace")
