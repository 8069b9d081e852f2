"""A small but real OpenID Connect provider for the tests, run as its own
process on loopback: discovery, an authorization endpoint with a sign-in
form, the token endpoint (authorization code + PKCE S256, client secret in
the body or Basic), userinfo, and JWKS. ID tokens are RS256-signed with
joserfc (Authlib's JOSE library).

Its people live in a JSON file read on every request, so a test can change
someone's groups between two sign-ins:
    {"alice": {"password": "...", "sub": "...", "email": "...", "groups": ["..."]}}

    python tests/identity_provider.py --port 0 --users users.json \\
        --client-id glassbox --client-secret s3cret --ready-file ready.txt
writes its base URL to the ready file once it listens.
"""

import argparse
import base64
import hashlib
import html
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import RSAKey

KEY = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "alg": "RS256", "use": "sig"})
CODE_TTL_SECONDS = 60


class Provider:
    def __init__(self, *, users_file: Path, client_id: str, client_secret: str):
        self.users_file = users_file
        self.client_id = client_id
        self.client_secret = client_secret
        self.issuer = ""  # set once the port is known
        self.codes: dict[str, dict] = {}
        self.access_tokens: dict[str, str] = {}  # token -> username
        self.lock = threading.Lock()

    def users(self) -> dict:
        return json.loads(self.users_file.read_text())

    def claims_of(self, username: str) -> dict:
        person = self.users()[username]
        return {
            "sub": person.get("sub", f"sub-{username}"),
            "preferred_username": username,
            "email": person.get("email", f"{username}@example.test"),
            "given_name": person.get("given_name", username.title()),
            "family_name": person.get("family_name", "Tester"),
            "groups": person.get("groups", []),
        }


class Handler(BaseHTTPRequestHandler):
    provider: Provider

    def log_message(self, *args):  # quiet: the test output is the place for failures
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        fields = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        return {key: values[0] for key, values in fields.items()}

    def do_GET(self):
        url = urlparse(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        provider = self.provider
        if url.path == "/.well-known/openid-configuration":
            base = provider.issuer
            return self._json(
                200,
                {
                    "issuer": base,
                    "authorization_endpoint": f"{base}/authorize",
                    "token_endpoint": f"{base}/token",
                    "userinfo_endpoint": f"{base}/userinfo",
                    "jwks_uri": f"{base}/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if url.path == "/jwks":
            return self._json(200, {"keys": [KEY.as_dict(private=False)]})
        if url.path == "/authorize":
            if query.get("client_id") != provider.client_id or query.get("response_type") != "code":
                return self._json(400, {"error": "invalid_request"})
            return self._sign_in_page(query, error="")
        if url.path == "/userinfo":
            header = self.headers.get("Authorization", "")
            username = provider.access_tokens.get(header.removeprefix("Bearer ").strip())
            if not header.startswith("Bearer ") or username is None:
                return self._json(401, {"error": "invalid_token"}, {"WWW-Authenticate": "Bearer"})
            return self._json(200, provider.claims_of(username))
        return self._json(404, {"error": "not_found"})

    def _sign_in_page(self, query: dict, *, error: str):
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(key)}" value="{html.escape(value)}">'
            for key, value in query.items()
        )
        page = (
            "<!doctype html><title>Test identity provider</title><h1>Test identity provider</h1>"
            f'<p class="error">{html.escape(error)}</p>'
            f'<form method="post" action="/authorize">{hidden}'
            '<label>Username <input name="username" id="idp-username"></label>'
            '<label>Password <input name="password" type="password" id="idp-password"></label>'
            '<button type="submit" id="idp-submit">Sign in</button></form>'
        )
        self._send(200 if not error else 401, page.encode(), "text/html; charset=utf-8")

    def do_POST(self):
        url = urlparse(self.path)
        form = self._form()
        if url.path == "/authorize":
            return self._authorize(form)
        if url.path == "/token":
            return self._token(form)
        return self._json(404, {"error": "not_found"})

    def _authorize(self, form: dict):
        provider = self.provider
        username, password = form.pop("username", ""), form.pop("password", "")
        person = provider.users().get(username)
        if person is None or not secrets.compare_digest(person["password"], password):
            return self._sign_in_page(form, error="Wrong username or password.")
        code = secrets.token_urlsafe(24)
        with provider.lock:
            provider.codes[code] = {
                "username": username,
                "redirect_uri": form.get("redirect_uri", ""),
                "nonce": form.get("nonce"),
                "code_challenge": form.get("code_challenge"),
                "expires": time.time() + CODE_TTL_SECONDS,
            }
        target = form["redirect_uri"] + "?" + urlencode({"code": code, "state": form.get("state", "")})
        self._send(302, b"", "text/plain", {"Location": target})

    def _client_ok(self, form: dict) -> bool:
        provider = self.provider
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        return client_id == provider.client_id and secrets.compare_digest(secret or "", provider.client_secret)

    def _token(self, form: dict):
        provider = self.provider
        if not self._client_ok(form):
            return self._json(401, {"error": "invalid_client"})
        with provider.lock:
            grant = provider.codes.pop(form.get("code", ""), None)  # a code is good once
        if (
            form.get("grant_type") != "authorization_code"
            or grant is None
            or grant["expires"] < time.time()
            or grant["redirect_uri"] != form.get("redirect_uri")
        ):
            return self._json(400, {"error": "invalid_grant"})
        if grant["code_challenge"]:
            verifier = form.get("code_verifier", "").encode()
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
            if challenge != grant["code_challenge"]:
                return self._json(400, {"error": "invalid_grant", "error_description": "PKCE"})
        now = int(time.time())
        claims = provider.claims_of(grant["username"])
        id_claims = {
            "iss": provider.issuer,
            "sub": claims["sub"],
            "aud": provider.client_id,
            "iat": now,
            "exp": now + 300,
            "preferred_username": claims["preferred_username"],
        }
        if grant["nonce"]:
            id_claims["nonce"] = grant["nonce"]
        id_token = jwt.encode({"alg": "RS256", "kid": KEY.kid}, id_claims, KEY)
        access_token = secrets.token_urlsafe(24)
        provider.access_tokens[access_token] = grant["username"]
        return self._json(
            200, {"access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--users", type=Path, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    provider = Provider(users_file=args.users, client_id=args.client_id, client_secret=args.client_secret)
    Handler.provider = provider
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    args.ready_file.write_text(provider.issuer)
    server.serve_forever()


if __name__ == "__main__":
    main()
