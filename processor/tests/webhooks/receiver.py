#!/usr/bin/env python3
"""A webhook receiver for Aula's tests. It verifies every request with the official
Standard Webhooks library (PyPI `standardwebhooks`, pinned in .ci/run), never with
Aula's own code, once per secret it was given: the result for each secret is what a
receiver holding only that secret would conclude.

Usage: receiver.py '<json config>'
  {"secrets": ["whsec_..."], "behaviour": "ok", "delay_ms": 0}
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

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

CONFIG = json.loads(sys.argv[1])
HOOKS = [Webhook(secret) for secret in CONFIG.get("secrets", [])]
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
