"""Finding, checking, starting and stopping the geosam2 engine (`geosam2 serve` on loopback)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QObject, QProcess, pyqtSignal

#: The oldest engine this plugin talks to: the first with `serve --machine-readable`,
#: `encode --progress json` and class labels.
MINIMUM_ENGINE = (0, 2, 0)
SETTINGS_BINARY = "geosam2/binary"
PLUGIN_DIR = os.path.dirname(__file__)


class EngineError(Exception):
    """A one-line explanation for the message bar."""


def version_text(version) -> str:
    return ".".join(str(v) for v in version)


def candidate_binaries(setting: str | None = None) -> list[str]:
    """Where the engine may be: the setting, then PATH, then beside the plugin."""
    candidates = []
    if setting:
        candidates.append(setting)
    found = shutil.which("geosam2")
    if found:
        candidates.append(found)
    candidates += [os.path.join(PLUGIN_DIR, "geosam2"), os.path.join(PLUGIN_DIR, "bin", "geosam2")]
    return candidates


def engine_version(binary: str) -> tuple:
    """The engine's version, from `geosam2 --version`; EngineError when it does not answer."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EngineError(f"{binary} does not run: {error}") from None
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", done.stdout)
    if done.returncode != 0 or not match:
        raise EngineError(f"{binary} is not the geosam2 engine (`--version` said {done.stdout.strip() or done.stderr.strip()!r})")
    return tuple(int(g) for g in match.groups())


def find_engine(setting: str | None = None) -> tuple[str, tuple]:
    """The engine binary to use and its version; EngineError (one line) when none fits."""
    if setting is None:
        setting = QgsSettings().value(SETTINGS_BINARY, "", type=str)
    if setting and not os.path.exists(setting):
        raise EngineError(f"the geosam2 engine set in the GeoSAM2 settings does not exist: {setting}")
    for path in candidate_binaries(setting):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        version = engine_version(path)
        if version < MINIMUM_ENGINE:
            raise EngineError(f"{path} is geosam2 {version_text(version)}; this plugin needs {version_text(MINIMUM_ENGINE)} or newer")
        return path, version
    tried = ", ".join(candidate_binaries(setting)) or "PATH"
    raise EngineError(f"the geosam2 engine was not found (looked in {tried}); install it or set its path in the GeoSAM2 dock")


class EngineProcess(QObject):
    """`geosam2 serve STORE --port 0 --machine-readable` as a QProcess: `ready(url)` once it
    listens (read from its first stdout line), `failed(message)` when it cannot start or stops
    unexpectedly, with the engine's own one-line error."""

    ready = pyqtSignal(str)
    failed = pyqtSignal(str)

    def __init__(self, binary: str, parent=None):
        super().__init__(parent)
        self.binary = binary
        self.url = None
        self.info = None
        self._stopping = False
        self._stdout = b""
        self._stderr = b""
        self.process = QProcess(self)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)

    def start(self, store: str, output: str | None = None, model: str | None = None, config: str | None = None):
        """`store` may also be a raster: the engine then plans its store beside it and encodes
        while serving (coarsest level first, then the view, a prompt's tile at once)."""
        arguments = ["serve", store, "--port", "0", "--host", "127.0.0.1", "--machine-readable"]
        if output:
            arguments += ["--out", output]
        if model:
            arguments += ["--model", model]
        if config:
            arguments += ["--config", config]
        self._stopping = False
        self.url = None
        self.process.start(self.binary, arguments)

    def is_running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def stop(self, timeout_ms: int = 10000):
        """SIGTERM (requests in flight are finished), then SIGKILL after `timeout_ms`."""
        if not self.is_running():
            return
        self._stopping = True
        self.process.terminate()
        if not self.process.waitForFinished(timeout_ms):
            self.process.kill()
            self.process.waitForFinished(2000)

    def last_error(self) -> str:
        lines = [line for line in self._stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1].removeprefix("Error: ") if lines else ""

    def _read_stdout(self):
        self._stdout += bytes(self.process.readAllStandardOutput())
        if self.url is None and b"\n" in self._stdout:
            line, _, self._stdout = self._stdout.partition(b"\n")
            try:
                self.info = json.loads(line)
                self.url = self.info["url"].rstrip("/")
            except (ValueError, KeyError, TypeError):
                self.failed.emit(f"the engine's first line is not its address: {line[:200]!r}")
                return
            self.ready.emit(self.url)

    def _read_stderr(self):
        self._stderr = (self._stderr + bytes(self.process.readAllStandardError()))[-8192:]

    def _finished(self, code, status):
        if self._stopping:
            return
        reason = self.last_error() or f"exit status {code}"
        self.failed.emit(f"the geosam2 engine stopped: {reason}")

    def _error(self, error):
        if error == QProcess.ProcessError.FailedToStart:
            self.failed.emit(f"cannot start {self.binary}: {self.process.errorString()}")
