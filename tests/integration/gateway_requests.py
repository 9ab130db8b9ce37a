"""The request counters a gateway's control API reports, for tests that wait on what it served.

export_requests(CONTROL_SOCKET, NAME) -> {"read": N, "write": N, ...} of one export;
export_requests(CONTROL_SOCKET) -> {export name: its counters} of every export.
"""
import http.client
import json
import socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("gateway", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def export_requests(control, name=None, timeout=10):
    c = _UnixConnection(control, timeout)
    try:
        c.request("GET", "/v1/exports" + ("/" + name if name else ""))
        body = json.load(c.getresponse())
    finally:
        c.close()
    if name:
        return body["export"]["requests"]
    return {e["name"]: e["requests"] for e in body["exports"]}
