"""API Gateway events of every legal shape, and bodies that are valid JSON but unusual, on the real handler.

Headers and query parameters may arrive in the single-value map, the multi-value map or both;
a JSON body may start with a BOM, hold huge integers or nest deeply; numbers in query strings
are ASCII only; a reply never carries -0, NaN or Infinity.
"""

from __future__ import annotations

import base64
import json
import math
import time

import pytest

from local.apigw import LambdaContext, json_event, proxy_event, response_body
from request import MAX_JSON_DEPTH


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as a strict client does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def raw(data: bytes, query: dict | None = None, content_type: str = "image/jpeg") -> dict:
    query = {"return_image": "false", **(query or {})}
    return proxy_event("POST", "/pose", data, {"Content-Type": content_type}, query)


def only_multi_value(event: dict, headers: bool = True, query: bool = True) -> dict:
    """The event as API Gateway may send it: the single-value maps null, only the multi-value ones."""
    event = dict(event)
    if headers:
        event["headers"] = None
    if query:
        event["queryStringParameters"] = None
    return event


def joints(reply: dict) -> list:
    return [(j["x"], j["y"], j["score"], j["visible"]) for j in reply["joints"]]


@pytest.fixture(scope="module")
def reference(app, pose_jpg) -> dict:
    response = app.lambda_handler(raw(pose_jpg, {"threshold": "0.3"}), LambdaContext())
    assert response["statusCode"] == 200
    return json.loads(response_body(response))


EVENT_SHAPES = {
    "headers null, multiValueHeaders only": lambda e: only_multi_value(e, query=False),
    "query null, multiValueQueryStringParameters only": lambda e: only_multi_value(e, headers=False),
    "both single-value maps null": lambda e: only_multi_value(e),
    "multi-value header name in lower case": lambda e: {
        **only_multi_value(e), "multiValueHeaders": {"content-type": ["image/jpeg"]}},
    "a parameter given twice with one value": lambda e: {
        **only_multi_value(e), "multiValueQueryStringParameters": {"threshold": ["0.3", "0.3"],
                                                                     "return_image": ["false"]}},
}


@pytest.mark.parametrize("name", list(EVENT_SHAPES))
def test_every_legal_event_shape_reads_the_content_type_and_the_parameters(call, pose_jpg, reference, name):
    status, reply, _ = call(EVENT_SHAPES[name](raw(pose_jpg, {"threshold": "0.3"})))
    assert status == 200, reply
    assert reply["threshold"] == 0.3 and "annotated_image" not in reply
    assert joints(reply) == joints(reference)


@pytest.mark.parametrize("maps", ["multi-value only", "both"])
def test_a_parameter_given_twice_with_two_values_is_422(call, pose_jpg, maps):
    event = raw(pose_jpg, {"threshold": "0.9"})
    event["multiValueQueryStringParameters"] = {"threshold": ["0.3", "0.9"]}
    if maps == "multi-value only":
        event["queryStringParameters"] = None
    status, body, _ = call(event)
    assert status == 422 and "'threshold' is given 2 times" in body["error"]["message"], body


@pytest.mark.parametrize("prefix_is_encoded", [False, True])
def test_a_json_body_starting_with_a_bom_is_read(call, pose_jpg, reference, prefix_is_encoded):
    text = "\ufeff" + json.dumps({"image": b64(pose_jpg), "threshold": 0.3, "return_image": False})
    event = proxy_event("POST", "/pose", text, {"Content-Type": "application/json"})
    if prefix_is_encoded:  # API Gateway base64-encodes a body whose media type it treats as binary
        event.update(body=b64(text.encode("utf-8")), isBase64Encoded=True)
    status, reply, _ = call(event)
    assert status == 200, reply
    assert joints(reply) == joints(reference)


def unknown_field_body(pose_jpg: bytes, value_json: str) -> str:
    return '{"image": "%s", "threshold": 0.3, "return_image": false, "extra": %s}' % (b64(pose_jpg), value_json)


VALID_UNUSUAL = {
    "a 5000-digit integer": "1" * 5000,
    "a negative 5000-digit integer": "-" + "9" * 5000,
    "a number beyond a float": "1e999",
    f"arrays nested {MAX_JSON_DEPTH} deep": "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1),
    "objects nested to the limit": '{"a":' * (MAX_JSON_DEPTH - 1) + "1" + "}" * (MAX_JSON_DEPTH - 1),
    "a string of 5000 brackets": json.dumps("[{" * 2500),
    "a string with escaped quotes and brackets": json.dumps('\\"[[[' * 100),
}


@pytest.mark.parametrize("name", list(VALID_UNUSUAL))
def test_valid_json_with_an_unusual_unknown_field_is_answered(call, pose_jpg, reference, name):
    event = proxy_event("POST", "/pose", unknown_field_body(pose_jpg, VALID_UNUSUAL[name]),
                        {"Content-Type": "application/json"})
    status, reply, _ = call(event)
    assert status == 200, reply
    assert joints(reply) == joints(reference)


@pytest.mark.parametrize("value", ["[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
                                   "[" * 990 + "]" * 990, '{"a":' * 990 + "1" + "}" * 990,
                                   "[" * 990])
def test_json_nested_deeper_than_the_limit_is_400_naming_it(call, pose_jpg, value):
    event = proxy_event("POST", "/pose", unknown_field_body(pose_jpg, value), {"Content-Type": "application/json"})
    status, body, _ = call(event)
    assert status == 400 and f"the limit is {MAX_JSON_DEPTH}" in body["error"]["message"], body


@pytest.mark.parametrize("where", ["query", "json string", "json number"])
@pytest.mark.parametrize("value", ["-0", "-0.0", "-0e5"])
def test_threshold_minus_zero_is_answered_as_zero(call, pose_jpg, where, value):
    if where == "query":
        event = raw(pose_jpg, {"threshold": value})
    else:
        text = '{"image": "%s", "return_image": false, "threshold": %s}' % (
            b64(pose_jpg), json.dumps(value) if where == "json string" else value)
        event = proxy_event("POST", "/pose", text, {"Content-Type": "application/json"})
    status, reply, response = call(event)
    assert status == 200, reply
    assert reply["threshold"] == 0.0 and math.copysign(1.0, reply["threshold"]) == 1.0
    assert '"threshold": -' not in response_body(response).decode()


NOT_ASCII_NUMBERS = {
    "Arabic-Indic digits": "\u0660.\u0665",
    "fullwidth digits": "\uff10.\uff15",
    "Devanagari digits": "\u0966.\u096b",
    "digits with an underscore": "0.5_0",
    "nan": "nan",
    "infinity": "inf",
    "a 5000-digit number": "1" * 5000,
}


@pytest.mark.parametrize("where", ["query", "json string"])
@pytest.mark.parametrize("name", list(NOT_ASCII_NUMBERS))
def test_threshold_must_be_written_in_ascii_digits(call, pose_jpg, where, name):
    value = NOT_ASCII_NUMBERS[name]
    event = raw(pose_jpg, {"threshold": value}) if where == "query" else json_event(
        "/pose", {"image": b64(pose_jpg), "threshold": value})
    status, body, _ = call(event)
    assert status == 422 and "'threshold'" in body["error"]["message"], body


@pytest.mark.parametrize("value", ["\u0663", "\uff13", "1" * 5000, "3.0", " "])
def test_max_people_must_be_ascii_digits(call, pose_jpg, value):
    status, body, _ = call(raw(pose_jpg, {"max_people": value}))
    assert status == 422 and "'max_people'" in body["error"]["message"], body


def test_a_reply_with_a_nan_in_it_is_a_500_not_invalid_json(app, monkeypatch, pose_jpg):
    """The last line of defence: json.dumps refuses NaN, so the client gets a valid JSON 500."""
    from pose import service

    original = service.to_json
    monkeypatch.setattr(service, "to_json", lambda *a, **k: {**original(*a, **k), "score": float("nan")})
    response = app.lambda_handler(json_event("/pose", {"image": b64(pose_jpg), "return_image": False}),
                                  LambdaContext())
    assert response["statusCode"] == 500
    assert strict_json(response_body(response))["error"]["code"] == "internal_error"


@pytest.mark.parametrize("output", ["nan", "inf", "-inf"])
def test_a_model_that_outputs_non_finite_numbers_gets_a_valid_reply(app, monkeypatch, pose_jpg, output):
    """Nothing downstream of the model turns a NaN or an infinity into one in the reply."""
    original = app.MODELS.pose.run
    monkeypatch.setattr(app.MODELS.pose, "run", lambda tensor: original(tensor) * float(output))
    response = app.lambda_handler(json_event("/pose", {"image": b64(pose_jpg)}), LambdaContext())
    assert response["statusCode"] == 200
    reply = strict_json(response_body(response))
    numbers = [v for person in reply["people"] for j in person["joints"] for v in (j["x"], j["y"], j["score"])]
    numbers += [person["score"] for person in reply["people"]]
    numbers += [v for person in reply["people"] for v in person["box"].values()]
    assert all(math.isfinite(v) for v in numbers)


@pytest.mark.parametrize("output", ["nan", "inf"])
def test_a_detector_that_outputs_non_finite_numbers_finds_nobody_and_the_reply_is_valid(app, pose_jpg, output):
    """The bundled FP32 detector with its outputs made NaN or infinite: no box, the whole photo's person."""
    from conftest import ROOT
    from pose import image
    from pose.detect import open_detector
    from pose.pipeline import estimate_people
    from pose.reply import annotated_image, to_json

    detector = open_detector(ROOT / "models" / "nanodet.onnx", threads=1)
    run = detector.run
    detector.run = lambda tensor: {k: v * float(output) for k, v in run(tensor).items()}
    rgb = image.read_photo(pose_jpg)
    found = estimate_people(rgb, app.MODELS.pose, detector)
    assert len(found.people) == 1  # nobody detected: the whole photo's one person
    reply = to_json(found, app.MODELS.pose.card, 0.5, (rgb.shape[1], rgb.shape[0]), {})
    strict_json(json.dumps(reply, allow_nan=False))
    annotated_image(rgb, found, app.MODELS.pose.card, 0.5)


# Bodies shaped to make a pass over the request text slow: each is answered in time linear in its length.
SLOW_SHAPES = {
    "brackets, then an unterminated run of escaped quotes": lambda n: "[" * 100 + '"' + '\\"' * (n // 2),
    "brackets, then strings of backslashes": lambda n: "[" * 100 + '"\\\\\\\\", ' * (n // 8),
    "brackets inside one long string": lambda n: '{"a": "' + "[{" * (n // 2) + '"}',
    "a threshold of digits ending in a letter": lambda n: '{"threshold": "' + "1" * n + 'x", "image": "AA=="}',
}


def fastest_seconds(call, text: str, times: int) -> float:
    """The fastest of five rounds of `times` answers to the body: the round least disturbed by whatever
    else the machine runs."""
    event = proxy_event("POST", "/pose", text, {"Content-Type": "application/json"})
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(times):
            status, _, _ = call(event)
            assert 400 <= status < 500
        rounds.append(time.perf_counter() - started)
    return min(rounds)


@pytest.mark.load  # it times 9 bodies of up to 4 MB per shape
@pytest.mark.parametrize("shape", list(SLOW_SHAPES))
def test_a_body_costs_time_linear_in_its_length(call, shape):
    """One body of 4 MB against eight of 512 KB of the same shape, the same bytes in all: linear is a ratio
    near 1, quadratic 8; the test fails from 4. (The depth check once took 13 s for 64 KB of the first
    shape, 42 s for 128 KB.)"""
    small, large = SLOW_SHAPES[shape](512 * 1024), SLOW_SHAPES[shape](4 * 1024 * 1024)
    ratio = fastest_seconds(call, large, 1) / fastest_seconds(call, small, 8)
    print(f"{shape}: one body of 8x the bytes took {ratio:.2f}x the time of eight")
    assert ratio < 4, ratio
