"""The local API Gateway (`python -m local.serve`) as a client sees it: the event maps it builds, and its
answers to badly framed requests. Malformed requests go over raw sockets with a client-side timeout, so
a server that hangs fails the test instead of stalling it; after each one, GET /health must answer 200.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.parse

import pytest

from conftest import DATA, local_server
from local.apigw import proxy_event
from local.serve import MAX_BODY, READ_TIMEOUT

CLIENT_TIMEOUT = READ_TIMEOUT + 10  # the longest a reply may take here; longer is a hang


@pytest.fixture(scope="module")
def address(tmp_path_factory):
    """(host, port) of a running local server. Always stopped."""
    with local_server(log_dir=tmp_path_factory.mktemp("serve")) as (_process, base):
        host, port = urllib.parse.urlsplit(base).netloc.split(":")
        yield host, int(port)


def exchange(address, request: bytes, half_close: bool = False) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the reply to its end (the server closes); (status, headers, body).
    With `half_close`, the client says it has sent everything (FIN) before it reads."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except TimeoutError:
            pytest.fail(f"no complete reply within {CLIENT_TIMEOUT} s; got {reply[:200]!r}")
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/"), f"no HTTP reply: {reply[:200]!r}"
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def request(method: str, target: str, headers: dict | list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A raw HTTP/1.1 request; `headers` as a list of pairs may repeat a name."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in pairs)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 1000) -> bytes:
    """`body` in the chunked transfer coding, `size` bytes a chunk."""
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def health(address) -> int:
    return exchange(address, request("GET", "/health", {"Connection": "close"}))[0]


JSON = {"Content-Type": "application/json"}
ABC = b'{"image": "abc"}'  # 16 bytes
CHUNKED = {**JSON, "Transfer-Encoding": "chunked"}

# name -> (raw request, whether the client half-closes after sending, the status the server must answer)
BAD_FRAMING = {
    "Content-Length -1": (request("POST", "/pose", {**JSON, "Content-Length": "-1"}, ABC), False, 400),
    "Content-Length not a number": (request("POST", "/pose", {**JSON, "Content-Length": "abc"}, ABC), False, 400),
    "Content-Length in non-ASCII digits": (request("POST", "/pose", {**JSON, "Content-Length": "١٦"}, ABC), False,
                                           400),
    "Content-Length of 5000 digits": (request("POST", "/pose", {**JSON, "Content-Length": "9" * 5000}), False, 413),
    "two different Content-Lengths": (request("POST", "/pose", [*JSON.items(), ("Content-Length", "16"),
                                                                 ("Content-Length", "17")], ABC), False, 400),
    "Content-Length over the body, client done": (request("POST", "/pose", {**JSON, "Content-Length": "100"}, ABC),
                                                  True, 400),
    "Content-Length over the body, client waits": (request("POST", "/pose", {**JSON, "Content-Length": "100"}, ABC),
                                                   False, 400),
    "Content-Length over MAX_BODY": (request("POST", "/pose", {**JSON, "Content-Length": str(MAX_BODY + 1)}), False,
                                     413),
    "chunk size not hex": (request("POST", "/pose", CHUNKED, b"zz\r\n" + ABC + b"\r\n0\r\n\r\n"), False, 400),
    "chunk shorter than its size": (request("POST", "/pose", CHUNKED, b"20\r\n" + ABC), True, 400),
    "chunk without its CRLF": (request("POST", "/pose", CHUNKED, b"10\r\n" + ABC + b"XX0\r\n\r\n"), False, 400),
    "chunks over MAX_BODY": (request("POST", "/pose", CHUNKED, b"%x\r\n" % (MAX_BODY + 1)), False, 413),
    "no last chunk": (request("POST", "/pose", CHUNKED, chunked(ABC)[:-5]), True, 400),
    "Transfer-Encoding gzip": (request("POST", "/pose", {**JSON, "Transfer-Encoding": "gzip"}, ABC), False, 501),
}


@pytest.mark.parametrize("name", BAD_FRAMING)
def test_a_badly_framed_body_gets_an_error_and_the_server_answers_the_next_request(address, name):
    raw, half_close, expected = BAD_FRAMING[name]
    status, headers, body = exchange(address, raw, half_close)
    assert status == expected, body
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == {400: "bad_request", 413: "too_large", 501: "not_implemented"}[status]
    assert health(address) == 200


def test_a_chunked_body_is_read_as_the_same_body_with_a_content_length(address):
    photo = (DATA / "pose.jpg").read_bytes()
    body = json.dumps({"image": base64.b64encode(photo).decode(), "return_image": False}).encode()
    plain = exchange(address, request("POST", "/pose", {**JSON, "Content-Length": str(len(body))}, body))
    status, _, chunked_reply = exchange(address, request("POST", "/pose", CHUNKED, chunked(body)))
    assert (status, plain[0]) == (200, 200), chunked_reply
    people = [json.loads(reply)["people"] for reply in (plain[2], chunked_reply)]
    assert people[0] == people[1] and len(people[0]) == 1


@pytest.mark.parametrize("query, expected", [("threshold=0.3&threshold=0.9", 422), ("threshold=0.3&threshold=0.3", 200),
                                             ("return_image=false&return_image=false", 200)])
def test_a_repeated_query_parameter_reaches_the_handler_with_all_its_values(address, query, expected):
    """API Gateway sends every value; the handler refuses a parameter given twice with different values."""
    photo = (DATA / "pose.jpg").read_bytes()
    headers = {"Content-Type": "image/jpeg", "Content-Length": str(len(photo))}
    status, _, body = exchange(address, request("POST", f"/pose?return_image=false&{query}", headers, photo))
    assert status == expected, body
    if expected == 422:
        assert "'threshold' is given 2 times" in json.loads(body)["error"]["message"]


def test_the_last_of_a_repeated_header_is_the_one_read(address):
    """A Content-Type given twice: the single-value map holds the last, as API Gateway's does."""
    photo = (DATA / "pose.jpg").read_bytes()
    raw = request("POST", "/pose?return_image=false", [("Content-Type", "text/plain"), ("Content-Type", "image/jpeg"),
                                                       ("Content-Length", str(len(photo)))], photo)
    status, _, body = exchange(address, raw)
    assert status == 200, body


def test_the_event_maps_hold_the_last_value_and_all_values_in_order():
    event = proxy_event("GET", "/health", None, [("Accept", "a/b"), ("X-Tag", "1"), ("X-Tag", "2")],
                        "b=2&a=1&b=&a=3&c=x%20y+z")
    assert event["queryStringParameters"] == {"b": "", "a": "3", "c": "x y z"}
    assert event["multiValueQueryStringParameters"] == {"b": ["2", ""], "a": ["1", "3"], "c": ["x y z"]}
    assert event["headers"] == {"Accept": "a/b", "X-Tag": "2"}
    assert event["multiValueHeaders"] == {"Accept": ["a/b"], "X-Tag": ["1", "2"]}


def test_the_event_maps_of_dicts_and_of_no_query():
    event = proxy_event("POST", "/pose", b"{}", {"Content-Type": "application/json"}, {"threshold": "0.5"})
    assert event["headers"] == {"Content-Type": "application/json"}
    assert event["multiValueHeaders"] == {"Content-Type": ["application/json"]}
    assert event["queryStringParameters"] == {"threshold": "0.5"}
    assert event["multiValueQueryStringParameters"] == {"threshold": ["0.5"]}
    for query in (None, "", {}):
        event = proxy_event("GET", "/health", query=query)
        assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
