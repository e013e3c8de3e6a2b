"""Outbound HTTP to user-supplied URLs, guarded against SSRF.

The host is resolved once, every address is checked (private, loopback, link-local, multicast and
reserved ranges are refused unless a configured CIDR allows them), and the connection goes to the
checked address, so a DNS answer cannot change between check and use. Redirects are not followed,
connect and total time are bounded, and at most `max_body_bytes` of the answer is read.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3

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


def is_allowed(address: IPAddress, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Public unicast addresses are allowed; anything else only inside an allowlisted network."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == network.version and address in network for network in allow):
        return True
    return address.is_global and not address.is_multicast and not address.is_reserved


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
    deadline = time.monotonic() + timeout_s
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    pool = _pool(target, timeout_s)
    try:
        response = pool.urlopen(
            method, target.path, body=body, headers={**headers, "Host": host_header},
            redirect=False, retries=False, preload_content=False, assert_same_host=False,
        )
        try:
            content = _read_capped(response, max_body_bytes, deadline)
        finally:
            response.release_conn()
        return Response(response.status, {k.lower(): v for k, v in response.headers.items()}, content)
    except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:
        raise EgressFailed("timeout", f"no answer within {timeout_s}s") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise EgressFailed("connection_error", str(exc)) from exc
    finally:
        pool.close()


def _pool(target: Target, timeout_s: float) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
    if target.scheme == "https":
        # Connect to the checked IP, but verify the certificate (and send SNI) for the hostname.
        return urllib3.HTTPSConnectionPool(
            target.address, target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
        )
    return urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False, maxsize=1)


def _read_capped(response: urllib3.BaseHTTPResponse, limit: int, deadline: float) -> bytes:
    chunks, size = [], 0
    while size < limit:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer took too long")
        chunk = response.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
