"""Sending one webhook delivery: where it may go, how it is signed, and the
one HTTP attempt.

A webhook URL is a request the platform makes on someone's say-so, so it is
an SSRF door: the host is resolved and every address it resolves to must be
public (not private, loopback, link-local, reserved or a cloud metadata
address). That check runs when the subscription is made AND before each
attempt, and the attempt connects to the very address that was checked (the
Host header and TLS name stay the URL's), so a DNS answer that changes in
between (rebinding) cannot steer a delivery inside. Redirects are never
followed, answers are read up to a size cap, and each attempt has a deadline.
"""

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

SIGNATURE_HEADER = "X-Glassbox-Signature"

# Cloud instance metadata endpoints (AWS/GCP/Azure, AWS IPv6, Alibaba,
# Oracle): refused even where private targets are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)


class UnsafeTarget(Exception):
    """The URL may not be called; the message says why, for the API and the log."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the attempt connects to


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Glassbox-Signature value: HMAC-SHA256 over "<timestamp>.<body>"."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_global and not address.is_multicast:
        return None
    if allow_private and (address.is_private or address.is_loopback or address.is_link_local):
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    return "not a public address"


def parse_url(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and path of a webhook URL, or UnsafeTarget."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"The URL is malformed: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeTarget(f"Only http and https URLs are allowed, not {scheme or 'none'!r}.")
    if not parts.hostname:
        raise UnsafeTarget("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("The URL may not carry a user name or password.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


def resolve_target(url: str, *, allow_private: bool | None = None) -> Target:
    """Resolve the URL's host and check every address it has; the first one
    is where an attempt connects."""
    if allow_private is None:
        allow_private = settings.GLASSBOX_WEBHOOK_ALLOW_PRIVATE
    scheme, host, port, path = parse_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnsafeTarget(f"The host {host!r} does not resolve: {exc}.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise UnsafeTarget(f"The host {host!r} does not resolve.")
    for text in addresses:
        # A scoped IPv6 address ("fe80::1%eth0") is link-local by definition.
        reason = _refusal(ipaddress.ip_address(text.split("%", 1)[0]), allow_private=allow_private)
        if reason is not None:
            raise UnsafeTarget(f"The host {host!r} resolves to {text}, {reason}; webhooks only go to public hosts.")
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the certificate checked against the URL's host name."""

    def __init__(self, address: str, port: int, *, server_hostname: str, timeout: float):
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname)


@dataclass
class AttemptResult:
    ok: bool
    response_code: int | None
    latency_ms: float | None
    error: str
    # False: trying again cannot help (the target is refused).
    retryable: bool = True


def post_signed(url: str, body: bytes, *, secret: str, event_type: str, delivery_id: int) -> AttemptResult:
    """One attempt: check the target again, POST the signed body, read at
    most the size cap before the deadline. Never raises for the target's
    sake: every outcome is an AttemptResult for the log."""
    try:
        target = resolve_target(url)
    except UnsafeTarget as exc:
        return AttemptResult(ok=False, response_code=None, latency_ms=None, error=str(exc)[:500], retryable=False)
    connect_timeout = settings.GLASSBOX_WEBHOOK_CONNECT_TIMEOUT
    deadline_seconds = settings.GLASSBOX_WEBHOOK_TIMEOUT
    cap = settings.GLASSBOX_WEBHOOK_MAX_RESPONSE_BYTES
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    default_port = 443 if target.scheme == "https" else 80
    if target.port != default_port:
        host_header += f":{target.port}"
    timestamp = int(time.time())
    headers = {
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": "Glassbox-Webhooks/1",
        "X-Glassbox-Event": event_type,
        "X-Glassbox-Delivery": str(delivery_id),
        SIGNATURE_HEADER: sign(secret, body, timestamp),
        "Connection": "close",
    }
    if target.scheme == "https":
        conn = _PinnedHTTPSConnection(target.address, target.port, server_hostname=target.host, timeout=connect_timeout)
    else:
        conn = http.client.HTTPConnection(target.address, target.port, timeout=connect_timeout)
    started = time.monotonic()
    code = None
    try:
        conn.connect()
        # After connecting, each read waits at most what is left of the deadline.
        conn.sock.settimeout(max(0.1, deadline_seconds - (time.monotonic() - started)))
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        code = response.status
        received = 0
        while True:
            left = deadline_seconds - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError(f"no complete answer within {deadline_seconds:g} s")
            if conn.sock is not None:
                conn.sock.settimeout(left)
            chunk = response.read1(16384) if hasattr(response, "read1") else response.read(16384)
            if not chunk:
                break
            received += len(chunk)
            if received > cap:
                raise ValueError(f"answer larger than {cap} bytes")
        latency_ms = (time.monotonic() - started) * 1000
        if 200 <= code < 300:
            return AttemptResult(ok=True, response_code=code, latency_ms=latency_ms, error="")
        if 300 <= code < 400:
            location = (response.getheader("Location") or "?")[:200]
            error = f"answered {code} (a redirect, to {location}); redirects are not followed"
        else:
            error = f"answered {code}"
        return AttemptResult(ok=False, response_code=code, latency_ms=latency_ms, error=error[:500])
    except (OSError, http.client.HTTPException, ValueError, TimeoutError) as exc:
        latency_ms = (time.monotonic() - started) * 1000
        return AttemptResult(
            ok=False, response_code=code, latency_ms=latency_ms, error=f"{type(exc).__name__}: {exc}"[:500]
        )
    finally:
        conn.close()
