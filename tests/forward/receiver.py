#!/usr/bin/env python3
"""A webhook receiver for callhook's forwarding tests, verifying every message with the
`standardwebhooks` package (the Standard Webhooks reference implementation), not with
callhook's own code.

    receiver.py --secret whsec_... --log FILE [--plan 500,hang,reset] [--hang-secs 3]
                [--delay-ms 0] [--port 0]

It prints `PORT <n>` on its first line once it listens, then answers each POST by the
plan: the n-th attempt of a message (counted by its webhook-id) gets the plan's n-th
answer, and every attempt after the plan's end gets 200:
  <status>  that HTTP status (e.g. 500, 503, 410)
  hang      no answer for --hang-secs, then 200 (the sender has given up by then)
  reset     the connection reset (TCP RST) without an answer
A message whose signature does not verify gets 401, whatever the plan says.

Every request is logged as one JSON line to --log, when it arrives: the path, the
webhook-id, the attempt number, whether it verified (and why not), the answer given, the
body's type, its data.call_id, data.family and data.id.
"""

import argparse
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secret", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--plan", default="")
    ap.add_argument("--hang-secs", type=float, default=3.0)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    webhook = Webhook(args.secret)
    plan = [p for p in args.plan.split(",") if p]
    attempts = {}
    lock = threading.Lock()
    log = open(args.log, "a", buffering=1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            msg_id = self.headers.get("webhook-id")
            entry = {"path": self.path, "id": msg_id, "time": time.time(),
                     "timestamp": self.headers.get("webhook-timestamp"),
                     "content_type": self.headers.get("content-type")}
            try:
                payload = webhook.verify(body, headers)
                entry["verified"] = True
                entry["error"] = None
            except Exception as e:  # noqa: BLE001 - any failure is a refusal
                payload = None
                entry["verified"] = False
                entry["error"] = f"{type(e).__name__}: {e}"
            if payload is None:
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {}
            data = payload.get("data") or {}
            entry.update(type=payload.get("type"), call_id=data.get("call_id"),
                         family=data.get("family"), event_id=data.get("id"),
                         version=payload.get("version"))
            with lock:
                n = attempts.get(msg_id, 0) + 1
                attempts[msg_id] = n
            entry["attempt"] = n
            answer = plan[n - 1] if n <= len(plan) else "200"
            if not entry["verified"]:
                answer = "401"
            entry["answer"] = answer
            log.write(json.dumps(entry) + "\n")
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000)
            if answer == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if answer == "hang":
                time.sleep(args.hang_secs)
                answer = "200"
            self.send_response(int(answer))
            self.send_header("content-length", "0")
            self.end_headers()

        def finish(self):
            try:
                super().finish()
            except OSError:
                pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # a reset or a sender that gave up: expected here

    server = Server(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
