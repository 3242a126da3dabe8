"""A local API Gateway: each HTTP request becomes the same proxy event and goes to the same handler.

    python -m local.serve [--port 3000] [--api-key KEY]

Like `sam local start-api` without Docker. Listens on 127.0.0.1 only. One function instance: calls
into the handler are serialised, as Lambda gives one request at a time to an instance. Paths that
are not API routes are served from web/ (the page), so `/` is the web frontend.

With --api-key (or API_KEY in the environment) it checks the key as API Gateway does for a stack
deployed with RequireApiKey=true: the routes need the header `x-api-key: KEY`, else 403
{"message":"Forbidden"}; the CORS preflight (OPTIONS) needs none.

A request body is read as its framing says, Content-Length or chunked Transfer-Encoding, up to
MAX_BODY. A badly framed one is answered by the server itself (400, 413 or 501, JSON error, then the
connection is closed), never passed on as an empty or cut body. A client that stops sending for
READ_TIMEOUT seconds (a body shorter than its Content-Length) gets a 400, so no request hangs a thread.
"""

from __future__ import annotations

import argparse
import hmac
import json
import mimetypes
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from local import function
from local.apigw import LambdaContext, proxy_event, response_body, response_headers

API_ROUTES = ("/pose", "/track", "/health")
WEB_ROOT = function.ROOT / "web"
MAX_BODY = 10 * 1024 * 1024  # read at most this much; the handler enforces the API's own limits
READ_TIMEOUT = 5  # seconds a client may pause mid-request before the server gives up on it
MAX_LINE = 1024  # bytes in a chunk-size or trailer line
MAX_TRAILERS = 100  # trailer lines after the last chunk
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take "+5", " 5", "1_0" and other scripts' digits
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")  # hex size, optional extensions


class Refused(Exception):
    """A request the server answers itself, without calling the handler: the status and error to send."""

    codes = {400: "bad_request", 413: "too_large", 501: "not_implemented"}

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.body = json.dumps({"error": {"code": self.codes[status], "message": message}}).encode()


def too_large() -> Refused:
    return Refused(413, f"the request body is over {MAX_BODY} bytes")


class Handler(BaseHTTPRequestHandler):
    server_version = "pose-local"
    app = None
    api_key = ""  # "" = the API takes requests without a key
    lock = threading.Lock()
    timeout = READ_TIMEOUT  # on every read and write of the connection (socketserver sets it)

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
        try:
            body = self._body()
        except Refused as refused:
            self.close_connection = True  # the rest of the body, if any, is not read
            self._send(refused.status, {"Content-Type": "application/json"}, refused.body)
            return
        event = proxy_event(method, url.path, body, self.headers.items(), url.query)
        with self.lock:
            response = self.app.lambda_handler(event, LambdaContext())
        self._send(response["statusCode"], response_headers(response), response_body(response))

    def _body(self) -> bytes:
        """The request body as its framing says (chunked, else Content-Length, else none); Refused when the
        framing is bad, the body is over MAX_BODY, or the client sends less than it announced."""
        coding = ", ".join(self.headers.get_all("Transfer-Encoding", [])).strip().lower()
        if coding == "chunked":  # it overrides any Content-Length (RFC 9112 6.3)
            return self._chunked()
        if coding:
            raise Refused(501, f"Transfer-Encoding {coding[:100]!r} is not supported; send chunked or Content-Length")
        lengths = {value.strip() for value in self.headers.get_all("Content-Length", [])}
        if len(lengths) > 1:
            raise Refused(400, "Content-Length is given more than once with different values")
        text = lengths.pop() if lengths else "0"
        if not _DIGITS.fullmatch(text):
            raise Refused(400, f"Content-Length {text[:40]!r} is not a number of bytes")
        digits = text.lstrip("0") or "0"  # int() refuses over 4300 digits
        if len(digits) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
            raise too_large()
        return self._read(int(digits), "Content-Length")

    def _chunked(self) -> bytes:
        """A chunked body (RFC 9112 7.1), at most MAX_BODY bytes; trailer fields are read and dropped."""
        body = bytearray()
        while size := self._chunk_size():
            if len(body) + size > MAX_BODY:
                raise too_large()
            chunk = self._read(size + 2, "a chunk's size")
            if chunk[-2:] != b"\r\n":
                raise Refused(400, "a chunk does not end with CRLF where its size says")
            body += chunk[:-2]
        for _ in range(MAX_TRAILERS):
            if self._line() in (b"\r\n", b"\n"):
                return bytes(body)
        raise Refused(400, f"over {MAX_TRAILERS} trailer lines after the last chunk")

    def _chunk_size(self) -> int:
        match = _CHUNK_SIZE.fullmatch(self._line())
        if not match:
            raise Refused(400, "a chunk does not start with its size in hex")
        return int(match[1], 16)

    def _line(self) -> bytes:
        """One line of chunked framing, ending in LF."""
        line = self._receive(lambda: self.rfile.readline(MAX_LINE + 1), "the chunked framing")
        if not line.endswith(b"\n"):
            raise Refused(400, f"the chunked body ends early or has a line over {MAX_LINE} bytes")
        return line

    def _read(self, size: int, framing: str) -> bytes:
        """`size` bytes of the body, which `framing` announced."""
        data = self._receive(lambda: self.rfile.read(size), framing)
        if len(data) < size:
            raise Refused(400, f"the body is shorter than {framing} says")
        return data

    @staticmethod
    def _receive(read, framing: str) -> bytes:
        """`read()`; a client that pauses over READ_TIMEOUT has sent less than `framing` announced: 400."""
        try:
            return read()
        except TimeoutError:
            raise Refused(400, f"the body is shorter than {framing} says: nothing more came for "
                               f"{READ_TIMEOUT} s") from None

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
        if self.close_connection:  # always so while protocol_version is HTTP/1.0; say it
            self.send_header("Connection", "close")
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
