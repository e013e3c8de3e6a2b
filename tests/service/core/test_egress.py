"""The SSRF guard's address judgement, and its one deadline over the whole exchange, against real sockets."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from service.core import egress

LOOPBACK_FORMS = [
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the cloud metadata address
    "fec0::1",  # site-local
    "fc00::1", "fe80::1", "::1", "::", "ff02::1", "2001:db8::1", "100::1",
    "127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1",
]
PUBLIC = ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]


@pytest.mark.parametrize("address", LOOPBACK_FORMS)
def test_private_addresses_are_refused_in_every_form(address):
    assert not egress.is_allowed(ipaddress.ip_address(address), [])
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(egress.EgressDenied) as refused:
        egress.resolve(f"http://{host}:8080/hook")
    assert refused.value.code == "forbidden_address"


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert egress.is_allowed(ipaddress.ip_address(address), [])


def test_an_embedded_address_is_judged_as_itself_against_the_allowlist():
    loopback = [ipaddress.ip_network("127.0.0.0/8")]
    assert egress.is_allowed(ipaddress.ip_address("2002:7f00:1::1"), loopback)
    assert egress.is_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), loopback)
    # Allowing the NAT64 prefix (an IPv6-only network) still refuses what it would translate to a private address.
    nat64 = [ipaddress.ip_network("64:ff9b::/96")]
    assert egress.is_allowed(ipaddress.ip_address("64:ff9b::808:808"), nat64)
    assert not egress.is_allowed(ipaddress.ip_address("64:ff9b::7f00:1"), nat64)


@pytest.fixture
def drip() -> Iterator[tuple[str, list[float]]]:
    """A loopback server that answers every request 10 bytes each 0.5 s, the headers (path /head) or the body."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    closed: list[float] = []

    def handle(conn: socket.socket) -> None:
        request = conn.recv(65536)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 100000\r\n\r\n"
        if b" /head " not in request:
            conn.sendall(head)
            head = b""
        payload = head + b"x" * 100_000
        try:
            for start in range(0, len(payload), 10):
                conn.sendall(payload[start:start + 10])
                time.sleep(0.5)
        except OSError:
            closed.append(time.monotonic())
        finally:
            conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", closed
    server.close()


@pytest.mark.parametrize("path", ["/body", "/head"])
def test_a_slow_drip_is_cut_off_at_the_deadline_not_after_it(drip, path):
    url, closed = drip
    started = time.monotonic()
    with pytest.raises(egress.EgressFailed) as failed:
        egress.get(url + path, allow_cidrs=["127.0.0.0/8"], timeout_s=2, max_body_bytes=1_000_000)
    elapsed = time.monotonic() - started
    assert failed.value.kind == "timeout" and 2 <= elapsed < 3
    deadline = time.monotonic() + 3
    while not closed and time.monotonic() < deadline:  # the server sees the connection go
        time.sleep(0.05)
    assert closed


def test_a_post_to_a_slow_drip_is_cut_off_too(drip):
    url, _ = drip
    started = time.monotonic()
    with pytest.raises(egress.EgressFailed) as failed:
        egress.post(url + "/hook", b"{}", {"content-type": "application/json"}, allow_cidrs=["127.0.0.0/8"],
                    timeout_s=1.5, max_body_bytes=1_000_000)
    assert failed.value.kind == "timeout" and time.monotonic() - started < 2.5


def test_a_prompt_answer_is_read_whole():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    response = egress.get(f"http://127.0.0.1:{server.getsockname()[1]}/", allow_cidrs=["127.0.0.0/8"], timeout_s=2)
    server.close()
    assert (response.status, response.body) == (200, b"hello")
