"""Regenerate the sample API Gateway (REST proxy) events in events/ from the committed photos.

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
PHOTO = HERE.parent / "tests" / "data" / "pose.jpg"  # one person
PEOPLE_PHOTO = HERE.parent / "tests" / "data" / "Pilots.jpg"  # several people


def events() -> dict[str, dict]:
    photo = PHOTO.read_bytes()
    b64 = base64.b64encode(photo).decode("ascii")
    people = base64.b64encode(PEOPLE_PHOTO.read_bytes()).decode("ascii")
    return {
        "pose-json": json_event("/pose", {"image": b64, "threshold": 0.6, "return_image": True}),
        "pose-data-url": json_event("/pose", {"image": "data:image/jpeg;base64," + b64, "return_image": False}),
        "pose-raw-jpeg": proxy_event("POST", "/pose", photo, {"Content-Type": "image/jpeg"}, {"threshold": "0.5"}),
        "pose-people": json_event("/pose", {"image": people, "max_people": 5, "return_image": True}),
        "track": json_event("/track", {"frames": [b64, b64], "state": None, "max_people": 5}),
        "health": proxy_event("GET", "/health"),
        "bad-json": proxy_event("POST", "/pose", '{"image": ', {"Content-Type": "application/json"}),
        "bad-base64": json_event("/pose", {"image": "not base64!"}),
        "bad-threshold": json_event("/pose", {"image": b64, "threshold": 1.5}),
        "not-an-image": json_event("/pose", {"image": base64.b64encode(b"just some text").decode()}),
    }


def files() -> dict[str, str]:
    """File name in events/ -> its text: each event with a fixed request id and time."""
    texts = {}
    for name, event in events().items():
        event["requestContext"]["requestId"] = f"sample-{name}"
        event["requestContext"]["requestTimeEpoch"] = 0
        texts[f"{name}.json"] = json.dumps(event, indent=1) + "\n"
    return texts


def main() -> None:
    for name, text in files().items():
        (HERE / name).write_text(text)
        print(f"wrote events/{name}")


if __name__ == "__main__":
    main()
