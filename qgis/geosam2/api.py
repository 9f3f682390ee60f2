"""The engine's JSON API over Qt's asynchronous network stack (never blocks the GUI thread)."""
from __future__ import annotations

import json

from qgis.PyQt.QtCore import QByteArray, QObject, QTimer, QUrl
from qgis.PyQt.QtNetwork import QNetworkAccessManager, QNetworkProxy, QNetworkReply, QNetworkRequest


class Answer:
    """What a request got: the HTTP status, the decoded JSON, and a one-line error or None."""

    def __init__(self, status, data, error):
        self.status, self.data, self.error = status, data, error

    @property
    def ok(self) -> bool:
        return self.error is None


class ApiClient(QObject):
    """Requests to one engine. Loopback only and without a proxy, so a proxy configured in QGIS
    or the system never sees them."""

    def __init__(self, base_url: str, parent=None, timeout_ms: int = 120000):
        super().__init__(parent)
        self.base_url = base_url.rstrip("/")
        self.timeout_ms = timeout_ms
        self.network = QNetworkAccessManager(self)
        self.network.setProxy(QNetworkProxy(QNetworkProxy.ProxyType.NoProxy))
        self.replies = set()

    def request(self, method: str, path: str, body=None, callback=None) -> QNetworkReply:
        request = QNetworkRequest(QUrl(self.base_url + path))
        request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
        if hasattr(request, "setTransferTimeout"):
            request.setTransferTimeout(self.timeout_ms)
        if method == "GET":
            reply = self.network.get(request)
        elif method == "POST":
            reply = self.network.post(request, QByteArray(json.dumps(body).encode("utf-8")))
        elif method == "PUT":
            reply = self.network.put(request, QByteArray(json.dumps(body).encode("utf-8")))
        elif method == "DELETE":
            reply = self.network.deleteResource(request)
        else:
            raise ValueError(method)
        self.replies.add(reply)
        reply.finished.connect(lambda: self._finished(reply, callback))
        return reply

    def abort_all(self):
        for reply in list(self.replies):
            reply.abort()

    def _finished(self, reply: QNetworkReply, callback):
        self.replies.discard(reply)
        status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
        payload = bytes(reply.readAll())
        network_error = reply.error()
        message = reply.errorString()
        reply.deleteLater()
        if network_error == QNetworkReply.NetworkError.OperationCanceledError:
            return  # aborted on purpose: nobody waits for it
        data = None
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            pass
        error = None
        if status is None or (network_error != QNetworkReply.NetworkError.NoError and not isinstance(data, dict)):
            error = f"the geosam2 engine does not answer ({message})"
        elif status >= 400:
            error = (data or {}).get("error") if isinstance(data, dict) else None
            error = error or f"the engine answered {status}"
        if callback is not None:
            callback(Answer(status, data, error))


class LatestWins(QObject):
    """Preview requests under a moving mouse: debounced, at most one in flight, the newest prompt
    always sent next (older unsent ones are overwritten, not queued), and an answer drawn only if
    no newer prompt is waiting and nothing invalidated it since it was sent (a click, a clear)."""

    def __init__(self, client: ApiClient, on_answer, debounce_ms: int = 40, parent=None):
        super().__init__(parent)
        self.client = client
        self.on_answer = on_answer
        self.pending = None
        self.in_flight = False
        self.generation = 0
        self.sent = 0
        self.drawn = 0
        self.dropped = 0
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(debounce_ms)
        self.timer.timeout.connect(self._send)

    def ask(self, body):
        self.pending = body
        self.timer.start()

    def invalidate(self):
        """Forget what is waiting and ignore what is in flight."""
        self.generation += 1
        self.pending = None
        self.timer.stop()

    def idle(self) -> bool:
        return not self.in_flight and self.pending is None and not self.timer.isActive()

    def _send(self):
        if self.in_flight or self.pending is None:
            return
        body, self.pending = self.pending, None
        generation = self.generation
        self.in_flight = True
        self.sent += 1
        self.client.request("POST", "/api/segment", body, lambda answer: self._answered(answer, generation))

    def _answered(self, answer, generation):
        self.in_flight = False
        if generation == self.generation and self.pending is None:
            self.drawn += 1
            self.on_answer(answer)
        else:
            self.dropped += 1
        if self.pending is not None:
            self._send()
