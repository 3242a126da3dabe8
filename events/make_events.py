"""Regenerate the sample API Gateway (REST proxy) events in events/ from the committed photo.

    python -m events.make_events

Each event is what API Gateway hands the function for one request; use them with
`make invoke EVENT=events/<name>.json` or `sam local invoke PoseFunction -e events/<name>.json`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from local.apigw import json_event, proxy_event

HERE = Path(__file__).resolve().parent
PHOTO = HERE.parent / "tests" / "data" / "pose.jpg"


def events() -> dict[str, dict]:
    photo = PHOTO.read_bytes()
    b64 = base64.b64encode(photo).decode("ascii")
    return {
        "pose-json": json_event("/pose", {"image": b64, "threshold": 0.6, "return_image": True}),
        "pose-data-url": json_event("/pose", {"image": "data:image/jpeg;base64," + b64, "return_image": False}),
        "pose-raw-jpeg": proxy_event("POST", "/pose", photo, {"Content-Type": "image/jpeg"}, {"threshold": "0.5"}),
        "health": proxy_event("GET", "/health"),
        "bad-json": proxy_event("POST", "/pose", '{"image": ', {"Content-Type": "application/json"}),
        "bad-base64": json_event("/pose", {"image": "not base64!"}),
        "bad-threshold": json_event("/pose", {"image": b64, "threshold": 1.5}),
        "not-an-image": json_event("/pose", {"image": base64.b64encode(b"just some text").decode()}),
    }


def main() -> None:
    for name, event in events().items():
        event["requestContext"]["requestId"] = f"sample-{name}"
        event["requestContext"]["requestTimeEpoch"] = 0
        (HERE / f"{name}.json").write_text(json.dumps(event, indent=1) + "\n")
        print(f"wrote events/{name}.json")


if __name__ == "__main__":
    main()
