"""The batch and gather functions against a real S3 API on loopback: moto in server mode.

No Step Functions engine runs here: the test plays the state machine's part. It lists the input prefix
as the map's ItemReader does, shapes and batches the items as its ItemSelector and ItemBatcher do
(statemachine/batch.asl.json), and invokes the functions' handlers in a fresh process (their cold start)
whose boto3 points at moto (AWS_ENDPOINT_URL_S3), as tests/test_s3_model.py does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.request

import boto3
import pytest
from PIL import Image

from conftest import DATA, ROOT, served_model
from test_batch_local import api_reply, assert_same_reply

pytest.importorskip("moto.server")

import gather  # noqa: E402
from pose import records  # noqa: E402
from pose.pipeline import MAX_PEOPLE  # noqa: E402

pytestmark = pytest.mark.aws

PHOTOS, RESULTS = "photos", "results"
IN, OUT = "in/", "run/"
EXECUTION = "test-execution"
JOB = {"input": {"bucket": PHOTOS, "prefix": IN}, "output": {"bucket": RESULTS, "prefix": OUT}, "return_image": True}

INVOKE = """
import json, sys
spec = json.loads(sys.stdin.read())

class Context:
    function_name, memory_limit_in_mb, aws_request_id = "BatchFunction", 1769, "test"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:BatchFunction"
    def get_remaining_time_in_millis(self):
        return spec.get("time_left_ms", 900_000)

def call(handler, event):
    try:
        return handler(event, Context())
    except Exception as exc:
        return {"raised": type(exc).__name__, "message": str(exc)}

out = {}
if spec.get("batches"):
    import batch
    out["batches"] = [call(batch.lambda_handler, event) for event in spec["batches"]]
if spec.get("gather"):
    import gather
    out["gather"] = call(gather.lambda_handler, spec["gather"])
print("RESULT " + json.dumps(out))
"""


def client(endpoint: str, key: str = "testing", secret: str = "testing", config=None):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=config)


def invoke(endpoint: str, spec: dict, key: str = "testing", secret: str = "testing") -> dict:
    """The handlers in a fresh process: the function's environment, the AWS SDK pointed at moto only."""
    from local.function import detector_path

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "DETECTOR", "POWERTOOLS_", "AWS_"))}
    env = {**clean, "MODEL_PATH": str(served_model()),
           "DETECTOR_PATH": str(detector_path()),
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769", "POWERTOOLS_LOG_LEVEL": "WARNING",
           "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    done = subprocess.run([sys.executable, "-c", INVOKE], cwd=ROOT, env=env, input=json.dumps(spec),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def listed(s3, bucket: str, prefix: str) -> list[dict]:
    """The items the map hands out: its ItemReader's listing, shaped by its ItemSelector."""
    contents = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [{"key": o["Key"], "size": o["Size"], "index": i} for i, o in enumerate(contents)]


def batched(items: list[dict], size: int, job: dict = JOB, execution: str = EXECUTION) -> list[dict]:
    """The events the ItemBatcher makes: Items, and BatchInput with the execution's input and name."""
    return [{"Items": items[i:i + size], "BatchInput": {"job": job, "execution": execution}}
            for i in range(0, len(items), size)]


def every_key(s3) -> dict[str, list[str]]:
    return {b["Name"]: sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"])
                              for o in page.get("Contents", []))
            for b in s3.list_buckets()["Buckets"]}


def huge_png() -> bytes:
    """A small file that decodes to 80 megapixels (over the batch's 64)."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 8_000)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def run(endpoint):
    """One batch run over the input prefix: three good photos, a broken one, one over the byte limit, one over
    the pixel limit, one deleted after the listing, a text file; a photo outside the prefix. Batches of 3."""
    s3 = client(endpoint)
    for bucket in (PHOTOS, RESULTS):
        s3.create_bucket(Bucket=bucket)
    good = {"pose.jpg": DATA / "pose.jpg", "sub/Pilots.jpg": DATA / "Pilots.jpg", "astronaut.png": DATA / "astronaut.png"}
    for name, path in good.items():
        s3.upload_file(str(path), PHOTOS, IN + name)
    s3.put_object(Bucket=PHOTOS, Key=IN + "broken.jpg", Body=(DATA / "pose.jpg").read_bytes()[:300])
    s3.put_object(Bucket=PHOTOS, Key=IN + "big.jpg", Body=b"\xff\xd8\xff" + bytes(records.MAX_BYTES))
    s3.put_object(Bucket=PHOTOS, Key=IN + "huge.png", Body=huge_png())
    s3.put_object(Bucket=PHOTOS, Key=IN + "gone.jpg", Body=(DATA / "pose.jpg").read_bytes())
    s3.put_object(Bucket=PHOTOS, Key=IN + "notes.txt", Body=b"not a photo")
    s3.put_object(Bucket=PHOTOS, Key="other/secret.jpg", Body=(DATA / "pose.jpg").read_bytes())
    items = listed(s3, PHOTOS, IN)
    s3.delete_object(Bucket=PHOTOS, Key=IN + "gone.jpg")
    before = every_key(s3)
    # big.jpg once more without its listed size: the function must then see the size in the GET's reply
    unlisted = [{**next(i for i in items if i["key"].endswith("big.jpg")), "size": None}]
    out = invoke(endpoint, {"batches": batched(items, 3) + batched(unlisted, 1, execution="unlisted-size"),
                            "gather": {"job": JOB, "execution": EXECUTION}})
    return {"s3": s3, "items": items, "before": before, "after": every_key(s3), "out": out, "good": good}


def results_jsonl(run) -> list[dict]:
    body = run["s3"].get_object(Bucket=RESULTS, Key=OUT + "results.jsonl")["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


def test_every_photo_gets_one_result_and_a_bad_photo_is_an_error_record_not_a_failed_batch(run):
    batches = run["out"]["batches"]
    assert all("raised" not in b for b in batches), batches
    assert sum(b["photos"] for b in batches[:-1]) == 7 and sum(b["skipped"] for b in batches[:-1]) == 1  # notes.txt
    assert sum(b["errors"] for b in batches[:-1]) == 4
    by_file = {line["file"]: line for line in results_jsonl(run)}
    assert sorted(by_file) == sorted(["pose.jpg", "sub/Pilots.jpg", "astronaut.png", "broken.jpg", "big.jpg",
                                      "huge.png", "gone.jpg"])
    codes = {name: line["error"]["code"] for name, line in by_file.items() if line["error"]}
    assert codes == {"broken.jpg": "unsupported_image", "big.jpg": "too_large", "huge.png": "too_large",
                     "gone.jpg": "not_found"}
    assert "64000000" in by_file["big.jpg"]["error"]["message"] and "pixels" in by_file["huge.png"]["error"]["message"]
    # the same object, its size not given by the listing: refused from the GET's Content-Length
    unlisted = json.loads(run["s3"].get_object(Bucket=RESULTS, Key=OUT + "results/big.jpg.json")["Body"].read())
    assert unlisted["error"]["code"] == "too_large" and batches[-1]["errors"] == 1


def test_each_photo_has_its_result_object_and_annotated_image_under_the_output_prefix(run):
    s3 = run["s3"]
    for line in results_jsonl(run):
        stored = json.loads(s3.get_object(Bucket=RESULTS, Key=f"{OUT}results/{line['file']}.json")["Body"].read())
        assert stored == line
        if line["error"] is None:
            png = s3.get_object(Bucket=RESULTS, Key=OUT + line["annotated_image"])
            assert png["ContentType"] == "image/png" and png["Body"].read()[:4] == b"\x89PNG"
    assert s3.head_object(Bucket=RESULTS, Key=OUT + "annotated/sub/Pilots.jpg.png")


def test_a_good_photo_gets_what_post_pose_answers_for_it(run, call):
    by_file = {line["file"]: line for line in results_jsonl(run)}
    for name, path in run["good"].items():
        line = dict(by_file[name])
        assert line.pop("annotated_image") == f"annotated/{name}.png"
        assert_same_reply(line, api_reply(call, path.read_bytes()))


def test_the_gathered_files_follow_the_listing_and_load_with_pycocotools(run):
    from pycocotools.coco import COCO

    summary = run["out"]["gather"]
    found = results_jsonl(run)
    people = sum(len(line["people"]) for line in found)
    assert summary["photos"] == 7 and summary["errors"] == 4 and summary["parts"] == 3
    assert summary["people"] == people >= 3
    assert summary["results"] == f"s3://{RESULTS}/{OUT}results.jsonl"
    index_of = {item["key"][len(IN):]: item["index"] for item in run["items"]}
    assert [index_of[line["file"]] for line in found] == sorted(index_of[line["file"]] for line in found)
    s3 = run["s3"]
    images = json.loads(s3.get_object(Bucket=RESULTS, Key=OUT + "images.json")["Body"].read())
    assert {im["file_name"]: im["id"] for im in images["images"]} == {
        name: index_of[name] + 1 for name in run["good"]}
    coco = json.loads(s3.get_object(Bucket=RESULTS, Key=OUT + "coco_results.json")["Body"].read())
    with contextlib.redirect_stdout(io.StringIO()):
        index = COCO()
        index.dataset = images
        index.createIndex()
        loaded = index.loadRes(coco)
    assert len(loaded.getAnnIds()) == people
    for line in found:
        anns = loaded.loadAnns(loaded.getAnnIds(imgIds=[index_of[line["file"]] + 1]))
        assert len(anns) == len(line["people"])
        for ann, person in zip(anns, line["people"]):
            assert ann["keypoints"][0::3] == [j["x"] for j in person["joints"]] and ann["score"] == person["score"]


def test_nothing_is_written_outside_the_output_prefix_and_the_photos_are_untouched(run):
    before, after = run["before"], run["after"]
    assert after[PHOTOS] == before[PHOTOS]
    assert before[RESULTS] == [] and after[RESULTS] and all(k.startswith(OUT) for k in after[RESULTS])
    assert not any("secret" in k for k in after[RESULTS])
    assert run["s3"].list_multipart_uploads(Bucket=RESULTS).get("Uploads", []) == []


def test_photos_a_batch_has_no_time_left_for_are_timeout_records_and_the_batch_ends_well(endpoint, run):
    job = {**JOB, "output": {"bucket": RESULTS, "prefix": "late/"}}
    out = invoke(endpoint, {"batches": batched(run["items"][:3], 3, job=job), "time_left_ms": 10_000})
    (batch,) = out["batches"]
    assert batch["photos"] == batch["errors"] == 3 and batch["people"] == 0
    for item in run["items"][:3]:
        name = item["key"][len(IN):]
        record = json.loads(run["s3"].get_object(Bucket=RESULTS, Key=f"late/results/{name}.json")["Body"].read())
        assert record["error"]["code"] == "timeout" and "BatchSize" in record["error"]["message"]


def test_a_job_with_a_bad_parameter_fails_the_batch(endpoint, run):
    job = {**JOB, "output": {"bucket": RESULTS, "prefix": "bad/"}, "threshold": 2}
    (batch,) = invoke(endpoint, {"batches": batched(run["items"][:2], 2, job=job)})["batches"]
    assert batch["raised"] == "BadParameter" and "threshold" in batch["message"]
    assert run["s3"].list_objects_v2(Bucket=RESULTS, Prefix="bad/")["KeyCount"] == 0


# ---------------------------------------------------------------------------------------------------
# One photo's trouble with S3 is that photo's record. The batch runs in this process, on a client of moto
# that first answers what S3 answers and moto 5.2 does not emulate (checked: moto stores a key of any length,
# and gives an object encrypted with a customer key to a plain GET). botocore's Stubber cannot answer one
# request among a batch's concurrent ones and let the others reach moto, so a before-send hook answers those
# few with S3's error document, which botocore then parses as it parses S3's.

SSE_C_REFUSAL = ("The object was stored using a form of Server Side Encryption. The correct parameters must be "
                 "provided to retrieve the object.")  # S3's message to a GET without the customer key


def like_s3(endpoint: str, refuse: dict[str, tuple[int, str]] | None = None):
    """A client of moto, trying once (no retries), that answers as S3 does: PutObject of a key over 1,024 UTF-8
    bytes is 400 KeyTooLongError; GetObject of an object stored with a customer key (SSE-C), without that key,
    is 400 InvalidRequest; a request for a key in `refuse` gets that (status, S3 error code)."""
    from urllib.parse import unquote, urlsplit

    from botocore.awsrequest import AWSResponse
    from botocore.config import Config
    from urllib3 import HTTPResponse

    s3 = client(endpoint, config=Config(retries={"max_attempts": 1}))
    refuse, sse_c = refuse or {}, set()
    customer_key = "x-amz-server-side-encryption-customer-algorithm"

    def answer(request, **_):
        bucket, _, key = unquote(urlsplit(request.url).path)[1:].partition("/")
        if request.method == "PUT" and customer_key in request.headers:
            sse_c.add((bucket, key))
        if key in refuse:
            status, code, message = *refuse[key], "refused by the test"
        elif request.method == "PUT" and len(key.encode()) > 1024:
            status, code, message = 400, "KeyTooLongError", "Your key is too long"
        elif request.method == "GET" and (bucket, key) in sse_c and customer_key not in request.headers:
            status, code, message = 400, "InvalidRequest", SSE_C_REFUSAL
        else:
            return None  # to moto
        body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>t</RequestId></Error>".encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"},
                           HTTPResponse(io.BytesIO(body), preload_content=False))

    s3.meta.events.register("before-send.s3", answer)
    return s3


@pytest.fixture(scope="module")
def batch_function():
    """handler/batch.py imported here, its models loaded from the environment as at the function's cold start."""
    from local.function import detector_path

    with pytest.MonkeyPatch.context() as env:
        for name in ("MODEL_S3_URI", "MODEL_SHA256"):
            env.delenv(name, raising=False)
        env.setenv("MODEL_PATH", str(served_model()))
        env.setenv("DETECTOR_PATH", str(detector_path()))
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        import batch
    return batch


TROUBLED_IN, TROUBLED_OUT = "troubled-photos", "troubled-results"
LONG_NAME = "n" * (1020 - len(IN) - len(".jpg")) + ".jpg"  # its input key is 1,020 bytes; its result key is not


@pytest.fixture(scope="module")
def troubled(endpoint):
    """A batch of five: two good photos, one whose result key passes 1,024 bytes, one stored with a customer
    key (SSE-C), one whose annotated image S3 refuses (400 InvalidArgument)."""
    s3 = like_s3(endpoint, {f"{OUT}annotated/astronaut.png.png": (400, "InvalidArgument")})
    for bucket in (TROUBLED_IN, TROUBLED_OUT):
        s3.create_bucket(Bucket=bucket)
    for name in ("pose.jpg", "Pilots.jpg", "astronaut.png"):
        s3.upload_file(str(DATA / name), TROUBLED_IN, IN + name)
    s3.put_object(Bucket=TROUBLED_IN, Key=IN + LONG_NAME, Body=(DATA / "pose.jpg").read_bytes())
    s3.put_object(Bucket=TROUBLED_IN, Key=IN + "sse.jpg", Body=(DATA / "pose.jpg").read_bytes(),
                  SSECustomerAlgorithm="AES256", SSECustomerKey=os.urandom(32))
    job = {**JOB, "input": {"bucket": TROUBLED_IN, "prefix": IN}, "output": {"bucket": TROUBLED_OUT, "prefix": OUT}}
    return s3, listed(s3, TROUBLED_IN, IN), job


def test_s3_refusing_one_photo_makes_that_photo_an_error_record_and_the_batch_keeps_the_others(batch_function,
                                                                                              troubled):
    s3, items, job = troubled
    assert len((IN + LONG_NAME).encode()) == 1020 and len(items) == 5
    summary = batch_function.run_batch(s3, items, job, EXECUTION, batch_function.MODELS)
    assert summary["photos"] == 5 and summary["errors"] == 3 and summary["people"] >= 2
    gathered = gather.gather_s3(s3, TROUBLED_OUT, OUT, EXECUTION)
    lines = [json.loads(line) for line in
             s3.get_object(Bucket=TROUBLED_OUT, Key=OUT + "results.jsonl")["Body"].read().decode().splitlines()]
    assert gathered["photos"] == 5 and [line["file"] for line in lines] == [i["key"][len(IN):] for i in items]
    errors = {line["file"]: line["error"] for line in lines if line["error"]}
    assert {name: error["code"] for name, error in errors.items()} == {
        "astronaut.png": "write_failed", LONG_NAME: "key_too_long", "sse.jpg": "unreadable"}
    assert errors["sse.jpg"]["message"] == "the object is encrypted with a customer key (SSE-C)"
    longest = len(f"{OUT}annotated/{LONG_NAME}.png".encode())  # its drawing's key, one byte over its record's
    assert "InvalidArgument" in errors["astronaut.png"]["message"]
    assert longest == 1035 and f"{longest} bytes" in errors[LONG_NAME]["message"]
    # a result object, when there is one, is the photo's line; S3 took none of the refused photos' records
    stored = {key[len(OUT + "results/"):-len(".json")]: json.loads(s3.get_object(Bucket=TROUBLED_OUT, Key=key)[
        "Body"].read()) for key in every_key(s3)[TROUBLED_OUT] if key.startswith(OUT + "results/")}
    assert stored == {line["file"]: line for line in lines if line["file"] not in ("astronaut.png", LONG_NAME)}
    assert [line["annotated_image"] for line in lines if not line["error"]] == [
        "annotated/Pilots.jpg.png", "annotated/pose.jpg.png"]


@pytest.mark.parametrize("status, code, message, expected", [
    (404, "NoSuchKey", "The specified key does not exist.", "not_found"),
    (404, "404", "Not Found", "not_found"),
    (403, "AccessDenied", "Access Denied", "forbidden"),
    (403, "InvalidObjectState", "The operation is not valid for the object's storage class", "unreadable"),
    (400, "InvalidRequest", SSE_C_REFUSAL, "unreadable"),
    (400, "InvalidArgument", "x-amz-checksum-mode header is invalid", "unreadable"),
    (503, "SlowDown", "Please reduce your request rate.", None),
    (500, "InternalError", "We encountered an internal error. Please try again.", None),
    (400, "RequestTimeout", "Your socket connection to the server was not read from or written to", None),
    (404, "NoSuchBucket", "The specified bucket does not exist", None),  # the job's bucket, not the photo
])
def test_a_refused_read_is_the_photos_error_and_any_other_s3_failure_raises(batch_function, status, code, message,
                                                                            expected):
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": code, "Message": message},
                       "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
    if expected is None:
        with pytest.raises(ClientError):
            batch_function.read_error(exc)
        return
    error = batch_function.read_error(exc)
    assert error.code == expected and message not in error.message


def test_s3_failing_on_one_photo_fails_the_batch_and_writes_no_part(batch_function, troubled):
    """After boto3's retries (none here: the test's client makes one attempt) S3's own failure raises, so the
    state machine retries the batch."""
    from botocore.exceptions import ClientError

    s3, items, job = troubled
    slow = like_s3(s3.meta.endpoint_url, {IN + "pose.jpg": (503, "SlowDown")})
    job = {**job, "output": {"bucket": TROUBLED_OUT, "prefix": "slow/"}}
    with pytest.raises(ClientError, match="SlowDown"):
        batch_function.run_batch(slow, items, job, EXECUTION, batch_function.MODELS)
    assert not any(key.startswith("slow/parts/") for key in every_key(s3)[TROUBLED_OUT])


# ---------------------------------------------------------------------------------------------------
# The IAM policies of template.yaml, enforced by moto


def function_statements(logical_id: str, parameters: dict) -> list[dict]:
    """The S3 statements of a function's role as CloudFormation would deploy them with `parameters`."""
    from samcli.yamlhelper import yaml_parse

    from test_template import TEMPLATE, translate

    role = translate(yaml_parse(TEMPLATE.read_text()))["Resources"][f"{logical_id}Role"]["Properties"]
    values = {"AWS::Partition": "aws", **parameters}

    def sub(node):
        if isinstance(node, dict) and set(node) == {"Fn::Sub"}:
            text = node["Fn::Sub"]
            for name, value in values.items():
                text = text.replace("${%s}" % name, value)
            assert "${" not in text, text
            return text
        if isinstance(node, dict):
            return {k: sub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v) for v in node]
        return node

    return [sub(s) for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]
            if any(a.startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]


@pytest.fixture()
def user_with(endpoint, run):
    """Makes an IAM user with a policy and switches moto's auth on; off again afterwards."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")

    def make(name: str, statements: list[dict]) -> tuple[str, str]:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def auth(count: str) -> None:
        request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()

    yield make, auth
    auth("inf")


def test_the_batch_function_needs_nothing_beyond_its_template_policy(endpoint, run, user_with):
    make, auth = user_with
    params = {"BatchInputBucket": PHOTOS, "BatchInputPrefix": IN, "BatchOutputBucket": RESULTS,
              "BatchOutputPrefix": "scoped/"}
    statements = function_statements("BatchFunction", params)
    assert {(s["Action"], s["Resource"]) for s in statements} == {
        ("s3:GetObject", f"arn:aws:s3:::{PHOTOS}/{IN}*"), ("s3:PutObject", f"arn:aws:s3:::{RESULTS}/scoped/*")}
    scoped = make("batch-function", statements)
    narrower = make("batch-function-elsewhere", function_statements("BatchFunction",
                                                                    {**params, "BatchOutputPrefix": "elsewhere/"}))
    good = [i for i in run["items"] if i["key"].endswith(("pose.jpg", "astronaut.png"))]
    job = {**JOB, "output": {"bucket": RESULTS, "prefix": "scoped/"}, "return_image": False}
    auth("0")
    (allowed,) = invoke(endpoint, {"batches": batched(good, 2, job=job)}, *scoped)["batches"]
    (denied,) = invoke(endpoint, {"batches": batched(good, 2, job=job)}, *narrower)["batches"]
    auth("inf")
    assert allowed["people"] >= 2 and {k: v for k, v in allowed.items() if k != "people"} == {
        "photos": 2, "errors": 0, "skipped": 0, "part": f"scoped/parts/{EXECUTION}/{good[0]['index']:012d}.json"}
    assert "AccessDenied" in denied["raised"] + denied["message"]  # the policy, not broken auth, decides


# ---------------------------------------------------------------------------------------------------
# The gather, in this process (it imports no model)


def test_the_gather_streams_large_files_as_multipart_uploads(endpoint, run):
    """40 parts of ~0.45 MB make a results.jsonl over one 16 MiB part: uploaded in parts, read back whole."""
    s3 = client(endpoint)
    prefix, execution = "big-run/", "many"
    line = json.dumps({"file": "x", "people": [], "error": None, "pad": "p" * 400}) + "\n"
    for n in range(40):
        part = {"lines": line * 1000, "coco": gather.items_text([{"image_id": n + 1, "category_id": 1,
                                                                  "keypoints": [1, 2, 0.5], "score": 0.5}]),
                "images": gather.items_text([{"id": n + 1, "file_name": f"{n}.jpg", "width": 1, "height": 1}]),
                "categories": [{"id": 1, "name": "person"}], "photos": 1000, "people": 1, "errors": 0, "skipped": 0}
        s3.put_object(Bucket=RESULTS, Key=f"{gather.parts_prefix(prefix, execution)}{n * 1000:012d}.json",
                      Body=json.dumps(part).encode())
    summary = gather.gather_s3(s3, RESULTS, prefix, execution)
    assert summary["parts"] == 40 and summary["photos"] == 40_000
    results = s3.get_object(Bucket=RESULTS, Key=prefix + "results.jsonl")["Body"].read()
    assert results == (line * 40_000).encode() and len(results) > gather.PART_BYTES
    coco = json.loads(s3.get_object(Bucket=RESULTS, Key=prefix + "coco_results.json")["Body"].read())
    assert [r["image_id"] for r in coco] == list(range(1, 41))
    images = json.loads(s3.get_object(Bucket=RESULTS, Key=prefix + "images.json")["Body"].read())
    assert [im["id"] for im in images["images"]] == list(range(1, 41)) and images["categories"][0]["id"] == 1


def test_a_gather_out_of_time_stops_clearly_and_changes_no_file(endpoint, run):
    s3 = client(endpoint)
    before = results_jsonl(run)
    with pytest.raises(TimeoutError, match="ran out of time after 0 parts"):
        gather.gather_s3(s3, RESULTS, OUT, EXECUTION, lambda: gather.MARGIN_MS - 1)
    out = invoke(endpoint, {"gather": {"job": JOB, "execution": EXECUTION}, "time_left_ms": 1000})
    assert out["gather"]["raised"] == "TimeoutError" and "0 parts" in out["gather"]["message"]
    assert results_jsonl(run) == before
    assert s3.list_multipart_uploads(Bucket=RESULTS).get("Uploads", []) == []
    # the same gather from a machine, without the function's time limit
    command, env = start_command(endpoint)
    done = subprocess.run([sys.executable, "handler/gather.py", f"s3://{RESULTS}/{OUT}", EXECUTION], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["photos"] == 7 and results_jsonl(run) == before


# ---------------------------------------------------------------------------------------------------
# make batch-s3 (local/batch_s3.py) against moto's CloudFormation and Step Functions. moto records the
# execution and its input but runs nothing: the execution stays RUNNING until it is stopped.


@pytest.fixture(scope="module")
def stack(endpoint):
    """A stack with the outputs a deployed batch stack has, and a state machine of the real definition."""
    aws = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "testing",
           "aws_secret_access_key": "testing"}
    sfn = boto3.client("stepfunctions", **aws)
    from test_batch_template import EXAMPLE, definition_with

    machine = sfn.create_state_machine(name="pose-batch", definition=json.dumps(definition_with(EXAMPLE)),
                                       roleArn="arn:aws:iam::123456789012:role/pose-batch")["stateMachineArn"]
    outputs = {"BatchStateMachineArn": machine, "BatchInputUri": f"s3://{PHOTOS}/{IN}",
               "BatchOutputUri": f"s3://{RESULTS}/{OUT}"}
    body = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()}}
    boto3.client("cloudformation", **aws).create_stack(StackName="pose", TemplateBody=json.dumps(body))
    return sfn, machine


def start_command(endpoint: str, *args: str) -> tuple[list[str], dict]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**clean, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    return [sys.executable, "-m", "local.batch_s3", *args, "--stack", "pose"], env


def test_make_batch_s3_starts_an_execution_with_the_job_and_prints_its_console_link(endpoint, stack):
    sfn, machine = stack
    command, env = start_command(endpoint, f"s3://{PHOTOS}/{IN}sub", f"s3://{RESULTS}/{OUT}today/", "--images",
                                 "--threshold", "0.5", "--no-wait", "--name", "first")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert execution["name"] == "first"
    assert json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {
        "input": {"bucket": PHOTOS, "prefix": IN + "sub/"}, "output": {"bucket": RESULTS, "prefix": OUT + "today/"},
        "return_image": True, "max_people": MAX_PEOPLE, "threshold": 0.5}
    assert "https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/" \
           "arn%3Aaws%3Astates%3Aus-east-1%3A" in done.stdout


@pytest.mark.parametrize("source, target, says", [
    (f"s3://{PHOTOS}/other/", f"s3://{RESULTS}/{OUT}", "may read only under"),
    (f"s3://{RESULTS}/{IN}", f"s3://{RESULTS}/{OUT}", "may read only under"),
    (f"s3://{PHOTOS}/{IN}", f"s3://{RESULTS}/elsewhere/", "may write only under"),
    (f"s3://{PHOTOS}/{IN}", "results/run/", "is not an s3://bucket/prefix/ URI"),
])
def test_make_batch_s3_refuses_what_the_stack_cannot_reach(endpoint, stack, source, target, says):
    sfn, machine = stack
    before = len(sfn.list_executions(stateMachineArn=machine)["executions"])
    command, env = start_command(endpoint, source, target, "--no-wait")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == before


def test_make_batch_s3_waits_until_the_execution_ends_and_says_how(endpoint, stack):
    sfn, machine = stack
    command, env = start_command(endpoint, f"s3://{PHOTOS}/{IN}", f"s3://{RESULTS}/{OUT}", "--name", "waited",
                                 "--poll", "0.2")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        arn = None
        while arn is None:
            assert process.poll() is None, process.communicate()
            arn = next((e["executionArn"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]
                        if e["name"] == "waited"), None)
        sfn.stop_execution(executionArn=arn)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "execution ABORTED" in stdout, stdout + stderr[-2000:]
