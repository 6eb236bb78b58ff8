"""Starting the viser server: the port is checked first (viser would quietly move to the next free
one, and the printed URL would be wrong)."""

from __future__ import annotations

import socket
from typing import Any

from headgen.errors import HeadgenError


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_after(host: str, port: int, tries: int = 50) -> int | None:
    return next((p for p in range(port + 1, min(port + 1 + tries, 65536)) if port_free(host, p)), None)


def start_server(host: str = "127.0.0.1", port: int = 8080) -> Any:
    """A running ``viser.ViserServer`` on exactly ``host:port``, or a HeadgenError saying why not."""
    if not 0 < port < 65536:
        raise HeadgenError(f"--port {port}: not a port number (1-65535)")
    try:
        socket.getaddrinfo(host, port)
    except socket.gaierror as exc:
        raise HeadgenError(f"--host {host}: not an address this machine can serve on ({exc})") from exc
    if not port_free(host, port):
        other = free_port_after(host, port)
        hint = f"; try --port {other}" if other else ""
        raise HeadgenError(f"port {port} on {host} is in use (another viewer or program){hint}")
    try:
        import viser
    except ImportError as exc:
        raise HeadgenError("the viewer needs viser: pip install 'viser>=1.1,<2'") from exc
    server = viser.ViserServer(host=host, port=port, verbose=False)
    if server.get_port() != port:  # taken between the check and the bind
        server.stop()
        raise HeadgenError(f"port {port} on {host} was taken while the viewer started; try --port {port + 1}")
    return server


def url(server: Any) -> str:
    host = server.get_host()
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{server.get_port()}"
