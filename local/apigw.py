"""API Gateway REST proxy events, built the way API Gateway builds them, for local runs and tests.

Bodies whose Content-Type is one of the API's binary media types arrive base64-encoded with
isBase64Encoded true, as template.yaml configures them; other bodies arrive as text.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable
from urllib.parse import parse_qsl

BINARY_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp")


def proxy_event(method: str, path: str, body: bytes | str | None = None,
                headers: dict | Iterable[tuple[str, str]] | None = None, query: str | dict | None = None) -> dict:
    """The event API Gateway sends for this request. `headers` as (name, value) pairs may repeat a name,
    as `query` as a query string may: the single-value maps get the last value of each name, the
    multi-value maps all of them in order, as API Gateway's do."""
    header_pairs = headers.items() if isinstance(headers, dict) else headers or ()
    query_pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else (query or {}).items()
    headers, multi_headers = value_maps(header_pairs)
    query, multi_query = value_maps(query_pairs)
    content_type = header(headers, "content-type")
    binary = content_type.split(";")[0].strip().lower() in BINARY_MEDIA_TYPES
    if body is None or body == b"" or body == "":
        text, encoded = None, False
    elif binary:
        raw = body.encode() if isinstance(body, str) else body
        text, encoded = base64.b64encode(raw).decode("ascii"), True
    else:
        text, encoded = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body), False
    request_id = str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers or {},
        "multiValueHeaders": multi_headers or {},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path, "httpMethod": method, "path": f"/Prod{path}", "stage": "Prod",
            "requestId": request_id, "accountId": "123456789012", "apiId": "local",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": header(headers, "user-agent") or "local"},
            "requestTimeEpoch": int(time.time() * 1000), "protocol": "HTTP/1.1",
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def value_maps(pairs: Iterable[tuple[str, str]]) -> tuple[dict | None, dict | None]:
    """(last value of each name, all values of each name in order) of (name, value) pairs; None when empty."""
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    return {name: values[-1] for name, values in multi.items()} or None, multi or None


def header(headers: dict | None, name: str) -> str:
    """A header's value, its name matched in any case; "" when absent."""
    return next((v for k, v in (headers or {}).items() if k.lower() == name), "")


def json_event(path: str, payload: dict, method: str = "POST") -> dict:
    return proxy_event(method, path, json.dumps(payload), {"Content-Type": "application/json"})


class LambdaContext:
    """The attributes of the Lambda context object that the function and Powertools read."""

    def __init__(self, memory_mb: int = 2048):
        self.function_name = "PoseFunction"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:PoseFunction"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "/aws/lambda/PoseFunction"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 28_000


def response_body(response: dict) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode("utf-8")


def response_headers(response: dict) -> dict[str, str]:
    """The response's headers (single- and multi-value), lower-cased names, as a client sees them."""
    headers = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
    for k, values in (response.get("multiValueHeaders") or {}).items():
        headers[k.lower()] = ", ".join(str(v) for v in values)
    return headers
