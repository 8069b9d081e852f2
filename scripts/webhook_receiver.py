#!/usr/bin/env python3
"""An example receiver of Glassbox webhooks: checks each delivery's signature
and refuses replays, then prints the event. Standard library only; copy the
`verify` function into your own service.

    WEBHOOK_SECRET=whsec_... python scripts/webhook_receiver.py --port 9000

Glassbox signs each attempt with `X-Glassbox-Signature: t=<unix seconds>,v1=<hex>`
where hex is HMAC-SHA256(secret, "<t>.<raw body>"). A receiver must:
  1. recompute the HMAC over the raw bytes it received (not re-serialized JSON),
  2. compare in constant time,
  3. refuse a timestamp more than 5 minutes away from its own clock, so a
     captured request cannot be replayed later,
  4. answer 2xx quickly (Glassbox retries anything else, with backoff).
Deliveries are at least once: use the payload's "id" to ignore a repeat.
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIGNATURE_HEADER = "X-Glassbox-Signature"
TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024


class SignatureError(Exception):
    pass


def verify(header: str | None, body: bytes, secret: str, *, now: float | None = None) -> None:
    """Raise SignatureError unless `header` signs `body` with `secret` within the tolerance."""
    if not header:
        raise SignatureError("no signature header")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        raise SignatureError("no timestamp in the signature") from None
    given = parts.get("v1", "")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError("signature does not match")
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError(f"timestamp is {int(now - timestamp)} s old; replays are refused")


def make_handler(secret: str, seen: list):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._answer(413, "too large")
            body = self.rfile.read(length)
            try:
                verify(self.headers.get(SIGNATURE_HEADER), body, secret)
            except SignatureError as exc:
                return self._answer(400, str(exc))
            event = json.loads(body)
            seen.append(event)
            print(f"{event['type']} {event['id']} model={event.get('model')}", flush=True)
            return self._answer(204, "")

        def _answer(self, code: int, text: str):
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet: the events are printed above
            pass

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        print("set WEBHOOK_SECRET to the secret Glassbox showed when you subscribed", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((args.host, args.port), make_handler(secret, []))
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
