"""A token issuer for docker/distribution's `auth: token`, for the tests.

Usage: token_issuer.py DIR SERVICE ISSUER EXPIRES_IN

DIR holds `key.pem` (an EC P-256 key) and `cert.pem` (its self-signed
certificate, the registry's `rootcertbundle`). Listens on 127.0.0.1 on a
free port, prints the port on stdout, and answers:

- `GET /token?service=&scope=…` with basic auth `alice:wonderland` (push and
  pull on every scope asked) or none (pull only, and nothing on a
  repository under `nixlayer-test/private`);
- `POST /token` with `grant_type=refresh_token` and `refresh_token`
  `refresh-s3cret-1` or a rotated one it gave (the OAuth2 flow docker uses
  for identity tokens); the answer carries a new `refresh_token`.

Tokens are JWTs signed with ES256 whose header carries the certificate as
`x5c`, the chain distribution verifies against its root bundle. Each request
is logged as one JSON line to DIR/requests.log, without any secret. It ends
after 300 requests or 600 seconds, so a test that dies leaves no server.
"""

import base64
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

DIR, SERVICE, ISSUER, EXPIRES_IN = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
USER, PASSWORD = "alice", "wonderland"
with open(os.path.join(DIR, "key.pem"), "rb") as f:
    KEY = serialization.load_pem_private_key(f.read(), password=None)
with open(os.path.join(DIR, "cert.pem"), "rb") as f:
    CERT = x509.load_pem_x509_certificate(f.read())
X5C = [base64.b64encode(CERT.public_bytes(serialization.Encoding.DER)).decode()]
REFRESH = {"refresh-s3cret-1"}
LOG = os.path.join(DIR, "requests.log")
LOCK = threading.Lock()


def token(subject, scopes, push):
    now = int(time.time())
    access = []
    for scope in scopes:
        parts = scope.split(":")
        if len(parts) != 3:
            continue
        kind, name, actions = parts
        wanted = actions.split(",")
        private = name.startswith("nixlayer-test/private")
        allowed = [a for a in wanted if push or (a == "pull" and not private)]
        access.append({"type": kind, "name": name, "actions": allowed})
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + EXPIRES_IN,
        "nbf": now - 10,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "access": access,
    }
    return jwt.encode(claims, KEY, algorithm="ES256", headers={"x5c": X5C})


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log(self, entry):
        with LOCK, open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def grant(self, subject, scopes, push, refresh=None):
        doc = {
            "token": token(subject, scopes, push),
            "expires_in": EXPIRES_IN,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if refresh:
            doc["refresh_token"] = refresh
        self.answer(200, doc)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        scopes = query.get("scope", [])
        auth = self.headers.get("Authorization", "")
        entry = {"method": "GET", "path": url.path, "scopes": scopes,
                 "service": query.get("service", [""])[0], "auth": auth.split(" ")[0]}
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                user, password = "", ""
            ok = user == USER and password == PASSWORD
            entry["user"] = user
            entry["ok"] = ok
            self.log(entry)
            if not ok:
                return self.answer(401, {"details": "bad user or password"})
            return self.grant(user, scopes, True)
        entry["ok"] = True
        self.log(entry)
        return self.grant("", scopes, False)

    def do_POST(self):
        length = min(int(self.headers.get("Content-Length", "0")), 1 << 16)
        form = parse_qs(self.rfile.read(length).decode())
        scopes = form.get("scope", [])
        grant = form.get("grant_type", [""])[0]
        refresh = form.get("refresh_token", [""])[0]
        ok = grant == "refresh_token" and refresh in REFRESH
        self.log({"method": "POST", "path": self.path, "scopes": scopes, "grant_type": grant,
                  "client_id": form.get("client_id", [""])[0],
                  "service": form.get("service", [""])[0],
                  "auth": self.headers.get("Authorization", "").split(" ")[0], "ok": ok})
        if not ok:
            return self.answer(401, {"error": "invalid_grant"})
        rotated = "refresh-s3cret-" + uuid.uuid4().hex
        REFRESH.add(rotated)
        return self.grant(USER, scopes, True, rotated)


server = HTTPServer(("127.0.0.1", 0), Handler)
server.timeout = 1
print(server.server_address[1], flush=True)
deadline = time.time() + 600
for _ in range(300):
    if time.time() > deadline:
        break
    server.handle_request()
