"""Outbound HTTP to user-supplied URLs, guarded against SSRF.

The host is resolved once, every address is checked (anything but global unicast is refused unless a configured
CIDR allows it; an IPv4 address embedded in an IPv6 one, as in the mapped, compatible, 6to4, Teredo and NAT64
forms, is judged as that IPv4 address), and the connection goes to the checked address, so a DNS answer cannot
change between check and use. Redirects are not followed, and at most `max_body_bytes` of the answer is read.

The whole exchange (connect, send, headers, body) has one deadline, `timeout_s`, enforced by a watchdog that
shuts the socket down when it passes: a server that drips its answer a few bytes at a time is cut off on time,
not after each of its slow reads.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3
import urllib3.connection

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressDenied(ValueError):
    """The URL may not be fetched; `code` is `invalid_url`, `unresolvable` or `forbidden_address`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EgressFailed(Exception):
    """The request was sent (or tried) and did not complete; `kind` is `timeout` or `connection_error`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection goes to


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes  # truncated to max_body_bytes


def resolve(url: str, allow_cidrs: Iterable[str] = ()) -> Target:
    """Parse and resolve `url`, refusing it unless every address it resolves to is allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressDenied("invalid_url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise EgressDenied("invalid_url", "the scheme must be http or https")
    if not parts.hostname:
        raise EgressDenied("invalid_url", "the URL has no host")
    if parts.username or parts.password:
        raise EgressDenied("invalid_url", "credentials in the URL are not accepted")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressDenied("unresolvable", f"{parts.hostname} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allow_cidrs]
    refused = [str(address) for address in addresses if not is_allowed(address, networks)]
    if refused or not addresses:
        raise EgressDenied("forbidden_address",
                           f"{parts.hostname} resolves to a non-public address ({', '.join(refused)})")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, str(addresses[0]))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are the IPv4 host
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses, ::a.b.c.d


def is_allowed(address: IPAddress, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Global unicast addresses are allowed; anything else only inside an allowlisted network.

    An IPv6 address that carries an IPv4 one (mapped, compatible, 6to4, Teredo, NAT64) is refused whenever that
    IPv4 address would be: a translator or relay would deliver the traffic there.
    """
    networks = list(allow)
    embedded = embedded_ipv4(address)
    if embedded is not None:
        if not is_allowed(embedded, networks):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return True  # the connection goes to the IPv4 address itself
    if any(address.version == network.version and address in network for network in networks):
        return True
    return is_public(address)


def is_public(address: IPAddress) -> bool:
    """Global unicast, and in no special-purpose range (site-local fec0::/10 included, which is_global misses)."""
    special = (address.is_multicast or address.is_reserved or address.is_private or address.is_loopback
               or address.is_link_local or address.is_unspecified
               or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local))
    return address.is_global and not special


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, Teredo client, NAT64), or None."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def post(url: str, body: bytes, headers: Mapping[str, str], *, allow_cidrs: Iterable[str] = (),
         timeout_s: float = 10.0, max_body_bytes: int = 4096) -> Response:
    """POST `body` to the resolved, checked address of `url`; never follows redirects."""
    return _send("POST", url, body, headers, allow_cidrs, timeout_s, max_body_bytes)


def get(url: str, *, allow_cidrs: Iterable[str] = (), timeout_s: float = 10.0, max_body_bytes: int = 4096,
        headers: Mapping[str, str] | None = None) -> Response:
    """GET the resolved, checked address of `url`; never follows redirects. The body is cut at `max_body_bytes`."""
    return _send("GET", url, None, headers or {}, allow_cidrs, timeout_s, max_body_bytes)


def _send(method: str, url: str, body: bytes | None, headers: Mapping[str, str], allow_cidrs: Iterable[str],
          timeout_s: float, max_body_bytes: int) -> Response:
    target = resolve(url, allow_cidrs)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    deadline = _Deadline(timeout_s)
    pool = _pool(target, timeout_s, deadline)
    try:
        response = pool.urlopen(
            method, target.path, body=body, headers={**headers, "Host": host_header},
            redirect=False, retries=False, preload_content=False, assert_same_host=False,
        )
        try:
            content = _read_capped(response, max_body_bytes)
        finally:
            response.release_conn()
        if deadline.expired:  # the watchdog cut the answer short: what was read is not the whole of it
            raise TimeoutError
        return Response(response.status, {k.lower(): v for k, v in response.headers.items()}, content)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if deadline.expired or isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
            raise EgressFailed("timeout", f"no complete answer within {timeout_s}s") from exc
        raise EgressFailed("connection_error", str(exc)) from exc
    finally:
        pool.close()
        deadline.close()


class _Deadline:
    """One request's total-time bound: when it passes, every socket the request opened is shut down, which ends
    whatever read or write is blocked on it (a slow drip of bytes never lets a per-read timeout fire)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        # A duplicate of the descriptor: TLS wrapping detaches the original socket object, and a shutdown acts on
        # the connection, whichever descriptor names it.
        with self._lock:
            self._sockets.append(sock.dup())
            if self.expired:
                _shut(self._sockets[-1])

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other end


class _Watched:
    """A urllib3 connection that hands its socket to the request's deadline as soon as it connects."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self._deadline.watch(sock)
        return sock


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _pool(target: Target, timeout_s: float, deadline: _Deadline) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
    if target.scheme == "https":
        # Connect to the checked IP, but verify the certificate (and send SNI) for the hostname.
        return _HTTPSPool(
            target.address, target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), deadline=deadline,
        )
    return _HTTPPool(target.address, target.port, timeout=timeout, retries=False, maxsize=1, deadline=deadline)


def _read_capped(response: urllib3.BaseHTTPResponse, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = response.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
