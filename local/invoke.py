"""Run the function on one API Gateway event in this process, like `sam local invoke -e EVENT`.

    python -m local.invoke events/pose-json.json [--out out]

Prints the status and every person's joints, writes the JSON reply to OUT/pose.json and the
annotated image (when the reply has one) to OUT/annotated.<png|jpeg|webp>, as its media type says.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from local import function
from local.apigw import LambdaContext, response_body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("event", type=Path)
    parser.add_argument("--out", type=Path, default=function.ROOT / "out")
    args = parser.parse_args(argv)
    event = json.loads(args.event.read_text())
    app = function.load()
    response = app.lambda_handler(event, LambdaContext())
    status = response["statusCode"]
    reply = json.loads(response_body(response) or b"null")
    print(f"{event['httpMethod']} {event['path']} -> {status}")
    args.out.mkdir(parents=True, exist_ok=True)
    if isinstance(reply, dict) and "joints" in reply:
        detector = reply.get("detector") or {}
        print(f"model {reply['model']['name']} ({reply['model']['quantization']}), detector "
              f"{detector.get('name', 'none')}, threshold {reply['threshold']}, "
              f"image {reply['image']['width']}x{reply['image']['height']}, {len(reply.get('people', []))} people")
        for number, person in enumerate(reply.get("people", []), start=1):
            box = person["box"]
            print(f" person {number}: score {person['score']:.3f}, box {box['left']:.0f},{box['top']:.0f} "
                  f"{box['width']:.0f}x{box['height']:.0f}")
            for j in person["joints"]:
                mark = "*" if j["visible"] else " "
                print(f"  {mark} {j['name']:<12} x={j['x']:8.1f} y={j['y']:8.1f} score={j['score']:.3f}")
        print("  timings ms: " + ", ".join(f"{k} {v:.1f}" for k, v in reply["timings_ms"].items()))
        for old in args.out.glob("annotated.*"):
            old.unlink()
        if reply.get("annotated_image"):
            header, data = reply["annotated_image"].split(",", 1)
            drawn = args.out / f"annotated.{header.split('/', 1)[1].split(';')[0]}"
            drawn.write_bytes(base64.b64decode(data))
            reply["annotated_image"] = f"<{drawn.stat().st_size} bytes: {drawn}>"
            print(f"wrote {drawn}")
        (args.out / "pose.json").write_text(json.dumps(reply, indent=1))
        print(f"wrote {args.out / 'pose.json'}")
    else:
        print(json.dumps(reply, indent=1))
    return 0 if status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
