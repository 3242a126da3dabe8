"""A local API Gateway: each HTTP request becomes the same proxy event and goes to the same handler.

    python -m local.serve [--port 3000] [--api-key KEY]

Like `sam local start-api` without Docker. Listens on 127.0.0.1 only. One function instance: calls
into the handler are serialised, as Lambda gives one request at a time to an instance. Paths that
are not API routes are served from web/ (the page), so `/` is the web frontend.

With --api-key (or API_KEY in the environment) it checks the key as API Gateway does for a stack
deployed with RequireApiKey=true: the routes need the header `x-api-key: KEY`, else 403
{"message":"Forbidden"}; the CORS preflight (OPTIONS) needs none.
"""

from __future__ import annotations

import argparse
import hmac
import mimetypes
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from local import function
from local.apigw import LambdaContext, proxy_event, response_body, response_headers

API_ROUTES = ("/pose", "/health")
MAX_BODY = 10 * 1024 * 1024  # read at most this much; the handler enforces the API's own limits
WEB_ROOT = function.ROOT / "web"


class Handler(BaseHTTPRequestHandler):
    server_version = "pose-local"
    app = None
    api_key = ""  # "" = the API takes requests without a key
    lock = threading.Lock()

    def log_message(self, fmt, *args):  # quiet; one line per request on stderr only when asked
        if os.getenv("SERVE_LOG"):
            super().log_message(fmt, *args)

    def _api(self, method: str) -> None:
        url = urlsplit(self.path)
        if self.api_key and method != "OPTIONS" and not hmac.compare_digest(
                self.headers.get("x-api-key", "").encode(), self.api_key.encode()):
            # API Gateway's own answer, with the CORS header its gateway responses carry.
            self._send(403, {"Content-Type": "application/json",
                             "Access-Control-Allow-Origin": os.getenv("ALLOWED_ORIGIN", "*")},
                       b'{"message":"Forbidden"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"Content-Type": "application/json"},
                       b'{"error": {"code": "too_large", "message": "request body over the API limit"}}')
            return
        body = self.rfile.read(length) if length else b""
        event = proxy_event(method, url.path, body, dict(self.headers.items()), url.query)
        with self.lock:
            response = self.app.lambda_handler(event, LambdaContext())
        self._send(response["statusCode"], response_headers(response), response_body(response))

    def _static(self) -> None:
        rel = urlsplit(self.path).path.lstrip("/") or "index.html"
        path = (WEB_ROOT / rel).resolve()
        if not path.is_relative_to(WEB_ROOT.resolve()) or not path.is_file():
            self._send(404, {"Content-Type": "text/plain"}, b"not found")
            return
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            ctype = "text/javascript"
        self._send(200, {"Content-Type": ctype, "X-Content-Type-Options": "nosniff"}, path.read_bytes())

    def _send(self, status: int, headers: dict, body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "connection"):
                self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> None:
        if urlsplit(self.path).path in API_ROUTES:
            self._api(method)
        elif method == "GET":
            self._static()
        else:
            self._send(404, {"Content-Type": "text/plain"}, b"not found")

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_OPTIONS(self):
        self._route("OPTIONS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.getenv("PORT", "3000")))
    parser.add_argument("--api-key", default=os.getenv("API_KEY", ""),
                        help="require this key in the x-api-key header, as a RequireApiKey=true stack does")
    args = parser.parse_args(argv)
    Handler.app = function.load()
    Handler.api_key = args.api_key
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    keyed = " (x-api-key required)" if args.api_key else ""
    print(f"serving the pose API{keyed} and web page on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
