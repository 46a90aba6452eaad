#!/usr/bin/env python3
"""A webhook receiver for Aula's tests. It verifies every request with the official
Standard Webhooks library (PyPI `standardwebhooks`, pinned in .ci/run), never with
Aula's own code, once per secret it was given: the result for each secret is what a
receiver holding only that secret would conclude.

`v1a` (ed25519) signatures, which that library does not verify (1.0.0 knows `v1`
only), are verified with PyCA `cryptography` (pinned in .ci/run), an independent
ed25519 implementation (OpenSSL's), given the endpoint's `whpk_` public key: the
signed content `{id}.{timestamp}.{body}`, a `v1a,<base64>` entry of the header, the
timestamp within 5 minutes, as the spec describes and the library does for `v1`.

Usage: receiver.py '<json config>'
  {"secrets": ["whsec_..." or "whpk_..."], "behaviour": "ok", "delay_ms": 0}
behaviour (per webhook-id):
  ok           200 every time
  fail_once    500 the first time, then 200
  gone         410
  throttle     429 with Retry-After: 1 the first time, then 200
  hang         never answers (the connection stays open)
Prints "PORT <n>" once listening, then one JSON line per request:
  {"id", "timestamp", "signature", "verified": [bool per secret], "body", "status"}
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TOLERANCE_SECONDS = 5 * 60


class Ed25519Webhook:
    """A `v1a` verifier holding one `whpk_` public key."""

    def __init__(self, public_key):
        raw = base64.b64decode(public_key[len("whpk_"):])
        self.key = Ed25519PublicKey.from_public_bytes(raw)

    def verify(self, body, headers):
        timestamp = headers["webhook-timestamp"]
        if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            raise WebhookVerificationError("timestamp out of tolerance")
        signed = ("%s.%s.%s" % (headers["webhook-id"], timestamp, body)).encode("utf-8")
        for entry in headers["webhook-signature"].split(" "):
            version, _, signature = entry.partition(",")
            if version != "v1a":
                continue
            try:
                self.key.verify(base64.b64decode(signature), signed)
                return
            except (InvalidSignature, ValueError):
                continue
        raise WebhookVerificationError("no matching v1a signature")


def verifier(secret):
    return Ed25519Webhook(secret) if secret.startswith("whpk_") else Webhook(secret)


CONFIG = json.loads(sys.argv[1])
HOOKS = [verifier(secret) for secret in CONFIG.get("secrets", [])]
BEHAVIOUR = CONFIG.get("behaviour", "ok")
DELAY = CONFIG.get("delay_ms", 0) / 1000.0
SEEN = {}
LOCK = threading.Lock()


def verified(hook, body, headers):
    try:
        hook.verify(body, headers)
        return True
    except WebhookVerificationError:
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        headers = {
            "webhook-id": self.headers.get("webhook-id", ""),
            "webhook-timestamp": self.headers.get("webhook-timestamp", ""),
            "webhook-signature": self.headers.get("webhook-signature", ""),
        }
        message = headers["webhook-id"]
        with LOCK:
            count = SEEN.get(message, 0)
            SEEN[message] = count + 1
        if DELAY:
            time.sleep(DELAY)
        status, extra = 200, {}
        if BEHAVIOUR == "fail_once" and count == 0:
            status = 500
        elif BEHAVIOUR == "gone":
            status = 410
        elif BEHAVIOUR == "throttle" and count == 0:
            status, extra = 429, {"Retry-After": "1"}
        elif BEHAVIOUR == "hang":
            status = None
        record = {
            "id": message,
            "timestamp": headers["webhook-timestamp"],
            "signature": headers["webhook-signature"],
            "verified": [verified(hook, body, headers) for hook in HOOKS],
            "body": body,
            "status": status,
        }
        with LOCK:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        if status is None:
            time.sleep(3600)
            return
        answer = json.dumps({"received": message}).encode()
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


server = Server(("127.0.0.1", 0), Handler)
sys.stdout.write("PORT %d\n" % server.server_address[1])
sys.stdout.flush()
server.serve_forever()
