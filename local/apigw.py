"""API Gateway REST proxy events, built the way API Gateway builds them, for local runs and tests.

Bodies whose Content-Type is one of the API's binary media types arrive base64-encoded with
isBase64Encoded true, as template.yaml configures them; other bodies arrive as text.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import parse_qs

BINARY_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp")


def proxy_event(method: str, path: str, body: bytes | str | None = None, headers: dict | None = None,
                query: str | dict | None = None) -> dict:
    headers = dict(headers or {})
    if isinstance(query, str):
        query = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
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
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path, "httpMethod": method, "path": f"/Prod{path}", "stage": "Prod",
            "requestId": request_id, "accountId": "123456789012", "apiId": "local",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "local")},
            "requestTimeEpoch": int(time.time() * 1000), "protocol": "HTTP/1.1",
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


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
