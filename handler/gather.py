"""The gather step of the batch state machine: the batches' parts -> results.jsonl, coco_results.json
and images.json under the output prefix.

Each batch (batch.py) writes one part, `<out>parts/<execution>/<index of its first photo>.json`, with
its photos' lines already rendered and numbered. This function concatenates the parts in the order of
the listing (the order of the photos) and streams each of the three files to S3, as a multipart upload
once it passes 16 MiB, so its memory stays at a few parts whatever the number of photos. It imports
nothing of the pose core, so it needs no layer. The folder CLI (local/batch.py) writes the same three
files through the same `Gathered` writer.

Invoked by the state machine with `{"job": <the execution's input>, "execution": <its name>}`.
One invocation has Lambda's 15 minutes: when the parts do not fit, it stops with an error naming how far
it got and leaves no half-written file; then run the same gather from a machine, without that limit:

    python handler/gather.py s3://bucket/output-prefix/ EXECUTION_NAME
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

PART_BYTES = 16 * 1024 * 1024  # S3 multipart parts (at least 5 MiB each but the last; 10,000 at most: 160 GiB)
READERS = 32  # parts downloaded at once
MARGIN_MS = 30_000  # stop and clean up when less than this is left of the invocation
OUTPUTS = (("results.jsonl", "application/x-ndjson"), ("coco_results.json", "application/json"),
           ("images.json", "application/json"))


def items_text(items: Iterable[dict]) -> str:
    """JSON objects as the inside of a JSON array, one per line, comma-separated."""
    return ",\n".join(json.dumps(item, separators=(",", ":")) for item in items)


class Gathered:
    """Writes results.jsonl, coco_results.json and images.json to three sinks (anything with write(str))
    from pieces: JSON lines, and the insides of the COCO results array and the images array."""

    def __init__(self, results, coco, images):
        self.results, self.coco, self.images = results, coco, images
        self.coco.write("[")
        self.images.write('{"images": [')
        self._coco_started = self._images_started = False

    def add(self, lines: str, coco_items: str, image_items: str) -> None:
        self.results.write(lines)
        if coco_items:
            self.coco.write((",\n" if self._coco_started else "\n") + coco_items)
            self._coco_started = True
        if image_items:
            self.images.write((",\n" if self._images_started else "\n") + image_items)
            self._images_started = True

    def close(self, categories: list[dict]) -> None:
        """Ends the two JSON files; images.json is then a COCO dataset file without annotations."""
        self.coco.write("\n]\n")
        self.images.write('\n],\n"annotations": [],\n"categories": ' + json.dumps(categories) + "}\n")


class S3Upload:
    """write(str) streams to s3://bucket/key: one PUT when it stays small, else a multipart upload."""

    def __init__(self, s3, bucket: str, key: str, content_type: str):
        self.s3, self.bucket, self.key, self.content_type = s3, bucket, key, content_type
        self.buffer: list[bytes] = []
        self.size = 0
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.buffer.append(data)
        self.size += len(data)
        if self.size >= PART_BYTES:
            self._upload_part()

    def _upload_part(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                             ContentType=self.content_type)["UploadId"]
        number = len(self.parts) + 1
        reply = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
                                    Body=b"".join(self.buffer))
        self.parts.append({"PartNumber": number, "ETag": reply["ETag"]})
        self.buffer, self.size = [], 0

    def close(self) -> None:
        if self.upload_id is None:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=b"".join(self.buffer),
                               ContentType=self.content_type)
            return
        if self.size:
            self._upload_part()
        self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                          MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        if self.upload_id is not None:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None


def in_order(fn: Callable[[Any], Any], args: Iterable, workers: int) -> Iterator:
    """fn over args on `workers` threads, results in the order of args, at most 2 x workers ahead."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for arg in args:
            pending.append(pool.submit(fn, arg))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def part_keys(s3, bucket: str, prefix: str) -> Iterator[str]:
    """The keys under prefix in S3's order (UTF-8 binary: the zero-padded indexes sort as numbers)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"]


def parts_prefix(output_prefix: str, execution: str) -> str:
    return f"{output_prefix}parts/{execution}/"


def gather_s3(s3, bucket: str, output_prefix: str, execution: str,
              time_left_ms: Callable[[], float] = lambda: float("inf")) -> dict:
    """Concatenate the execution's parts into the three files under output_prefix; counts and file URIs."""
    uploads = [S3Upload(s3, bucket, output_prefix + name, media_type) for name, media_type in OUTPUTS]
    gathered = Gathered(*uploads)
    totals = {"parts": 0, "photos": 0, "people": 0, "errors": 0, "skipped": 0}
    categories: list[dict] = []

    def read(key: str) -> dict:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    try:
        for part in in_order(read, part_keys(s3, bucket, parts_prefix(output_prefix, execution)), READERS):
            if time_left_ms() < MARGIN_MS:
                raise TimeoutError(f"the gather ran out of time after {totals['parts']} parts "
                                   f"({totals['photos']} photos); see docs/batch.md")
            gathered.add(part["lines"], part["coco"], part["images"])
            categories = categories or part["categories"]
            totals["parts"] += 1
            for name in ("photos", "people", "errors", "skipped"):
                totals[name] += part[name]
        gathered.close(categories)
        for upload in uploads:
            upload.close()
    except BaseException:
        for upload in uploads:
            upload.abort()
        raise
    return {**totals, **{name.split(".")[0]: f"s3://{bucket}/{output_prefix}{name}" for name, _ in OUTPUTS}}


def lambda_handler(event: dict, context: Any) -> dict:
    import boto3  # in the Lambda runtime
    from botocore.config import Config

    s3 = boto3.client("s3", config=Config(max_pool_connections=READERS + 4, retries={"mode": "standard"}))
    output = event["job"]["output"]
    summary = gather_s3(s3, output["bucket"], output["prefix"], event["execution"],
                        context.get_remaining_time_in_millis)
    print(json.dumps({"message": "gathered", **summary}))
    return summary


if __name__ == "__main__":  # the same gather from any machine (no 15-minute limit)
    import sys

    import boto3

    if len(sys.argv) != 3 or not sys.argv[1].startswith("s3://") or not sys.argv[1].endswith("/"):
        sys.exit("usage: python handler/gather.py s3://bucket/output-prefix/ EXECUTION_NAME")
    out_bucket, _, out_prefix = sys.argv[1][5:].partition("/")
    print(json.dumps(gather_s3(boto3.client("s3"), out_bucket, out_prefix, sys.argv[2])))
