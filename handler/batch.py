"""The batch function: a batch of photos under an S3 prefix in, one result per photo out.

The state machine (statemachine/batch.asl.json) lists the input prefix and calls this function with
`{"Items": [{"key", "size", "index"}, ...], "BatchInput": {"job": <the execution's input>, "execution":
<its name>}}`, where the job is `{"input": {"bucket", "prefix"}, "output": {"bucket", "prefix"}}` and,
optionally, `return_image`, `threshold`, `max_people`. For each photo it writes
`<out>results/<key under the input prefix>.json`, the photo's record (pose/records.py: what POST /pose
answers for it), with `return_image` also `<out>annotated/<same>.png`; for the batch, one part,
`<out>parts/<execution>/<index of its first item>.json`, which the gather step (gather.py) concatenates.

A photo that is not an image, over the limits, corrupt, gone or unreadable, or whose result objects S3
cannot take (a key over its 1,024 bytes), is an error record, in the part whatever befell its objects;
keys that are not photos (by suffix) or lie under the output prefix are skipped. Only S3 itself failing
after boto3's retries fails the batch, and the state machine retries it. The models are loaded once, at
import.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import ClientError

from gather import items_text, parts_prefix
from pose import memory, records, service
from pose.errors import Forbidden, KeyTooLong, NotFound, PhotoError, TimedOut, TooLarge, Unreadable, WriteFailed

logger = Logger()
PREFETCH = 2  # photos downloaded ahead of the one being estimated (memory: their bytes)
MARGIN_MS = 20_000  # photos not started with less than this left of the invocation are recorded as timed out
WRITERS = 4  # results and drawings being uploaded while the next photos are estimated
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
SSE_C = "server side encryption"  # in S3's message refusing an object stored with a customer key to a plain GET


MODELS = service.load_models_or_exit(logger.error)
S3 = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5},
                                      max_pool_connections=PREFETCH + WRITERS + 2))


def read_photo(s3, bucket: str, key: str, name: str, size: int | None) -> bytes | dict:
    """The object's bytes, or the error record saying why there are none (S3's own failures raise)."""
    if size is None or size <= records.MAX_BYTES:
        try:
            obj = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            return records.failed_record(name, read_error(exc))
        size = obj["ContentLength"]
        if size <= records.MAX_BYTES:
            return obj["Body"].read()
        obj["Body"].close()
    return records.failed_record(name, TooLarge(f"the object is {size} bytes; the limit is {records.MAX_BYTES}"))


def s3_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def read_error(exc: ClientError) -> PhotoError:
    """The photo's error when S3 refuses its object to GetObject. S3's own failures (throttling, errors left
    after boto3's retries, a missing bucket) are raised again: they fail the batch."""
    code = s3_code(exc)
    if code in ("NoSuchKey", "404"):
        return NotFound("no such object (deleted after the listing?)")
    if code in ("AccessDenied", "403"):
        return Forbidden("access denied to the object")
    if code == "InvalidObjectState":
        return Unreadable("the object is archived (restore it first)")
    if code in ("InvalidRequest", "InvalidArgument"):  # S3's message may hold request details: not repeated
        if SSE_C in str(exc.response["Error"].get("Message", "")).lower():
            return Unreadable("the object is encrypted with a customer key (SSE-C)")
        return Unreadable(f"S3 refuses the object to a plain GET ({code})")
    raise exc


def write_error(exc: ClientError) -> PhotoError:
    """The photo's error when S3 refuses a result object of it to PutObject. S3's own failures, and a denied
    write (the job's output prefix, the same for every photo), are raised again: they fail the batch."""
    code = s3_code(exc)
    if code in ("InvalidArgument", "InvalidRequest", "KeyTooLongError"):
        return WriteFailed(f"S3 refused a result object of the photo ({code})")
    raise exc


def with_line(record: dict) -> tuple[dict, str]:
    """The record and its line in the part (and its result object)."""
    return record, json.dumps(record, separators=(",", ":"))


def prefetched(fetch, items: list) -> Any:
    """(item, fetch(item)) in order, with at most PREFETCH + 1 downloads in flight or waiting."""
    with ThreadPoolExecutor(PREFETCH) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fetch, item)))
            if len(pending) > PREFETCH:
                item, future = pending.popleft()
                yield item, future.result()
        while pending:
            item, future = pending.popleft()
            yield item, future.result()


def run_batch(s3, items: list[dict], job: dict, execution: str, models: service.Models,
              time_left_ms=lambda: float("inf")) -> dict:
    """Every photo of the batch -> its result object (and drawing), then the batch's part; the counts.
    Photos not started while less than MARGIN_MS is left are `timeout` records: the batch still ends well."""
    options = records.job_options(job)
    source, output = job["input"], job["output"]
    in_prefix, out_bucket, out_prefix = source.get("prefix", ""), output["bucket"], output["prefix"]
    photos = [item for item in items
              if records.is_photo_name(item["key"]) and item["key"].startswith(in_prefix)
              and not (source["bucket"] == out_bucket and item["key"].startswith(out_prefix))]
    counts = {"photos": len(photos), "people": 0, "errors": 0, "skipped": len(items) - len(photos)}

    def fetch(item: dict) -> bytes | dict:
        return read_photo(s3, source["bucket"], item["key"], item["key"][len(in_prefix):], item.get("size"))

    def store(record: dict, drawing: tuple[str, bytes] | None) -> tuple[dict, str]:
        """Uploads the photo's drawing, then its record; the record and its line, or the photo's error record
        when S3 cannot take one of its objects (that record is then in the part only)."""
        name = record["file"]
        result = f"results/{name}.json"
        if drawing is not None:
            record["annotated_image"] = f"annotated/{name}.{'png' if drawing[0] == 'image/png' else 'jpg'}"
        longest = max(len((out_prefix + key).encode()) for key in (result, record.get("annotated_image", "")))
        if longest > MAX_KEY_BYTES:
            return with_line(records.failed_record(name, KeyTooLong(
                f"its result key would be {longest} bytes; S3 takes {MAX_KEY_BYTES} at most (shorten the "
                "output prefix or the photo's name)")))
        record, line = with_line(record)
        try:
            if drawing is not None:
                put(record["annotated_image"], drawing[1], drawing[0])
            put(result, line.encode(), "application/json")
        except ClientError as exc:
            return with_line(records.failed_record(name, write_error(exc)))
        return record, line

    def put(key: str, body: bytes, media_type: str) -> None:
        s3.put_object(Bucket=out_bucket, Key=out_prefix + key, Body=body, ContentType=media_type)

    stored = []  # (the photo's item, its (record, line) once its objects are written)
    with ThreadPoolExecutor(WRITERS) as writer:  # the uploads overlap the next photo's estimate
        for item, fetched in prefetched(fetch, photos):
            name = item["key"][len(in_prefix):]
            if time_left_ms() < MARGIN_MS:
                record, drawing = records.failed_record(name, TimedOut(
                    "the batch ran out of time before this photo; run it again, or with a smaller BatchSize")), None
            elif isinstance(fetched, dict):
                record, drawing = fetched, None
            else:
                record, drawing = records.photo_record(name, fetched, models, options)
                memory.release()  # the photo's buffers go back before the next photo is decoded
            stored.append((item, writer.submit(store, record, drawing)))
    lines, coco, images = [], [], []
    categories: list[dict] = []
    for item, future in stored:
        record, line = future.result()  # an upload that failed (after boto3's retries) fails the batch
        counts["people"] += len(record["people"])
        counts["errors"] += record["error"] is not None
        image_id = item["index"] + 1  # the photo's place in the listing: unique, the same on a retry
        lines.append(line + "\n")
        coco += records.coco_results(record, image_id)
        if (entry := records.image_entry(record, image_id)) is not None:
            images.append(entry)
            categories = categories or records.categories(record)
    first = items[0]["index"] if items else 0
    part = f"{parts_prefix(out_prefix, execution)}{first:012d}.json"
    body = {"lines": "".join(lines), "coco": items_text(coco), "images": items_text(images),
            "categories": categories, **counts}
    s3.put_object(Bucket=out_bucket, Key=part, Body=json.dumps(body).encode(), ContentType="application/json")
    return {**counts, "part": part}


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    batch = event["BatchInput"]
    summary = run_batch(S3, event["Items"], batch["job"], batch["execution"], MODELS,
                        context.get_remaining_time_in_millis)
    logger.info("batch done", extra=summary)
    return summary
