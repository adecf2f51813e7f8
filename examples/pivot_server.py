#!/usr/bin/env python3
"""An example pivot web server for pivotd (Python 3 standard library only).

pivotd asks it what to do with a call (GET with the call's fields in the query string, the
pivot node's defaults). The first answer speaks a greeting, collects a 4-digit PIN and asks
again; the follow-up gets the digits as Digits[pin] and answers with a `say` node that reads
them back, then hangs up.

    python3 examples/pivot_server.py 9000      # serves on 127.0.0.1:9000
    pivotd --config examples/pivot.toml
    sipp -sf sipp-scenarios/ivr_dtmf.xml -s 6000 -m 1 127.0.0.1:5070

With `pivot_secret` set on the account, every request carries X-Pivotd-Signature; the
`verify` function below shows how to check it.
"""
import base64
import hashlib
import hmac
import http.server
import json
import sys
import urllib.parse

SECRET = b""  # the account's pivot_secret, when one is configured


def verify(url: str, body: bytes, signature: str) -> bool:
    """X-Pivotd-Signature = base64(HMAC-SHA256(secret, full request URL + raw body))."""
    mac = hmac.new(SECRET, url.encode() + body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(mac).decode(), signature)


class Pivot(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: pivotd reuses the connection

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if SECRET:
            full = f"http://{self.headers['Host']}{self.path}"
            if not verify(full, b"", self.headers.get("X-Pivotd-Signature", "")):
                return self.answer(403, {"error": "bad signature"})
        if url.path == "/start":
            flow = {
                "module": "tts",
                "data": {"text": f"Hello {q.get('Caller-ID-Name', 'caller')}. Enter your pin, then pound."},
                "children": {"_": {
                    "module": "collect_dtmf",
                    "data": {"max_digits": 4, "collection_name": "pin", "timeout": 8000},
                    "children": {"_": {
                        "module": "pivot",
                        "data": {"voice_url": f"http://{self.headers['Host']}/pin", "debug": True},
                    }},
                }},
            }
        elif url.path == "/pin":
            pin = q.get("Digits[pin]", "")
            flow = {
                "module": "say",
                "data": {"text": pin or "0", "type": "digits"},
                "children": {"_": {"module": "hangup"}},
            }
        else:
            return self.answer(404, {"error": "no such page"})
        self.answer(200, flow)

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Pivot)
    print(f"pivot example server on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
