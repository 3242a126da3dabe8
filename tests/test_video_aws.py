"""The video state machine (statemachine/video.asl.json) played by hand against moto's S3 server, its steps run
by the video function's handler (handler/video.py) in this process with boto3 pointed at moto.

No Step Functions engine runs here. `Machine` walks the definition's own states (the kinds and fields it uses:
Pass with States.Format, Choice, Task, Map over an S3 listing or an input array, Succeed; InputPath-free paths,
Parameters, ItemSelector, ResultPath, OutputPath), so the order of the steps is the file's, not the test's.
Each Task's event and reply go through JSON and are held under Step Functions' 256 KB. The results are
compared with `python -m local.video CLIP OUT --segment-seconds S --overlap-seconds O` run in process on the
same clip with the same models: tracks.json equal, annotated.mp4 decoding to every frame.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from unittest import mock

import boto3
import numpy as np
import pytest

from conftest import ROOT, SHARED, served_model
from pose.errors import TooLarge

av = pytest.importorskip("av", reason="PyAV is not installed: pip install -r requirements-dev.txt")
pytest.importorskip("moto.server")

from test_video import photo_frames, write_clip  # noqa: E402

pytestmark = [pytest.mark.aws, pytest.mark.model]

DEFINITION = ROOT / "statemachine" / "video.asl.json"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:video"
BASKETBALL = SHARED / "video" / "mmaction2_test_video_structuralize.mp4"
CLIPS, RESULTS = "video-clips", "video-results"  # buckets of their own: the moto server is shared by every module
JOB = {"input": {"bucket": CLIPS, "prefix": "in/"}, "output": {"bucket": RESULTS, "prefix": "run/"},
       "segment_seconds": 1.0, "overlap_seconds": 0.3}
PAYLOAD_LIMIT = 256 * 1024  # Step Functions' limit on a state's input and output


class Context:
    function_name, memory_limit_in_mb, aws_request_id = "VideoFunction", 1769, "test"
    invoked_function_arn = FUNCTION_ARN

    def get_remaining_time_in_millis(self):
        return 900_000


class Machine:
    """A States Language definition walked state by state; Task resources are called through `invoke`."""

    def __init__(self, definition: dict, invoke, s3):
        self.definition, self.invoke, self.s3 = definition, invoke, s3
        self.tasks: list[tuple[str, dict, dict]] = []  # (state, event, reply) in the order they ran
        self.failures: list[tuple[str, str]] = []  # (map item's key or index, error) of tolerated failures

    def start(self, data: dict, name: str = "test-execution"):
        return self.run(self.definition, data, {"Execution": {"Input": data, "Name": name}})

    def run(self, machine: dict, data, context: dict):
        state_name = machine["StartAt"]
        while True:
            state = machine["States"][state_name]
            kind = state["Type"]
            if kind == "Choice":
                state_name = next((c["Next"] for c in state["Choices"] if self.rule(c, data)), state.get("Default"))
                assert state_name, "no choice matched and no Default"
                continue
            if kind == "Succeed":
                return path(state.get("OutputPath", "$"), data, context)
            if kind == "Pass":
                result = self.parameters(state.get("Parameters", data), data, context)
            elif kind == "Task":
                result = self.task(state_name, state, data, context)
            elif kind == "Map":
                result = self.map(state, data, context)
            else:
                raise AssertionError(f"state kind {kind} is not played here")
            data = path(state.get("OutputPath", "$"), with_result(data, state, result), context)
            assert len(json.dumps(data)) < PAYLOAD_LIMIT, state_name
            if state.get("End"):
                return data
            state_name = state["Next"]

    def task(self, name: str, state: dict, data, context: dict):
        event = json.loads(json.dumps(self.parameters(state.get("Parameters", data), data, context)))
        assert len(json.dumps(event)) < PAYLOAD_LIMIT, name
        reply = json.loads(json.dumps(self.invoke(state["Resource"], event)))
        self.tasks.append((name, event, reply))
        return reply

    def map(self, state: dict, data, context: dict):
        if "ItemReader" in state:
            reader = state["ItemReader"]
            assert reader["Resource"] == "arn:aws:states:::s3:listObjectsV2"
            where = self.parameters(reader["Parameters"], data, context)
            items = [o for page in self.s3.get_paginator("list_objects_v2").paginate(**where)
                     for o in page.get("Contents", [])]
            items = json.loads(json.dumps(items, default=str))
        else:
            items = path(state["ItemsPath"], data, context)
        processor = state["ItemProcessor"]
        results, failed = [], 0
        for index, item in enumerate(items):
            item_context = {**context, "Map": {"Item": {"Value": item, "Index": index}}}
            child = self.parameters(state["ItemSelector"], data, item_context) if "ItemSelector" in state else item
            try:
                results.append(self.run(processor, child, {"Execution": context["Execution"]}))
            except Exception as exc:  # a failed child: the map tolerates it or fails
                failed += 1
                self.failures.append((str(item.get("Key", index)), f"{type(exc).__name__}: {exc}"))
                if failed * 100 > state.get("ToleratedFailurePercentage", 0) * max(len(items), 1):
                    raise
        if "ResultWriter" in state:  # the children's results go to S3, not into the state
            return {"ResultWriterDetails": {"Bucket": path(state["ResultWriter"]["Parameters"]["Bucket.$"], data, context)},
                    "children": len(results), "failed": failed}
        return results

    def rule(self, rule: dict, data) -> bool:
        if "Or" in rule:
            return any(self.rule(r, data) for r in rule["Or"])
        if "And" in rule:
            return all(self.rule(r, data) for r in rule["And"])
        if "Not" in rule:
            return not self.rule(rule["Not"], data)
        try:
            value = path(rule["Variable"], data, {})
        except KeyError:
            return rule.get("IsPresent") is False
        if "IsPresent" in rule:
            return rule["IsPresent"]
        if "StringMatches" in rule:
            pattern = "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", rule["StringMatches"]))
            return isinstance(value, str) and re.fullmatch(pattern, value, re.S) is not None
        if "BooleanEquals" in rule:
            return value is rule["BooleanEquals"]
        raise AssertionError(f"choice rule {rule} is not played here")

    def parameters(self, template, data, context):
        if isinstance(template, dict):
            out = {}
            for key, value in template.items():
                if key.endswith(".$"):
                    out[key[:-2]] = intrinsic(value, data, context) if value.startswith("States.") else path(value, data, context)
                else:
                    out[key] = self.parameters(value, data, context)
            return out
        if isinstance(template, list):
            return [self.parameters(v, data, context) for v in template]
        return template


def path(expression: str, data, context: dict):
    """A reference path: $, $.a.b or $$.a.b (KeyError when absent)."""
    root, rest = (context, expression[2:]) if expression.startswith("$$") else (data, expression[1:])
    for part in filter(None, rest.split(".")):
        root = root[part]
    return root


def intrinsic(expression: str, data, context: dict):
    (template, argument), = re.findall(r"States\.Format\('([^']*)', (\$[^)]*)\)", expression)
    return template.replace("{}", str(path(argument, data, context)), 1)


def with_result(data, state: dict, result):
    if "ResultPath" not in state:
        return result
    if state["ResultPath"] is None:
        return data
    out = json.loads(json.dumps(data))
    *parents, last = state["ResultPath"][2:].split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = result
    return out


@pytest.fixture(scope="module")
def handler(endpoint):
    """handler/video.py imported as Lambda would (its models loaded at import), its boto3 pointed at moto."""
    from local.function import detector_path

    env = {"MODEL_PATH": str(served_model()), "DETECTOR_PATH": str(detector_path()), "MODEL_THREADS": "1",
           "POWERTOOLS_LOG_LEVEL": "WARNING", "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    with mock.patch.dict(os.environ, env):
        yield importlib.import_module("video")


def basketball_start(path: Path, frames: int = 60) -> Path | None:
    """The first 2 s (60 frames) of ../shared's basketball clip, re-encoded, or None when ../shared is absent."""
    if not BASKETBALL.is_file():
        return None
    with av.open(str(BASKETBALL)) as container:
        decoded = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), container.decode(video=0))]
    write_clip(path, decoded, fps=30)
    return path


@pytest.fixture(scope="module")
def run(handler, endpoint, tmp_path_factory):
    """One execution over in/: a clip made from tests/data/pose.jpg (24 frames at 10 fps: 3 segments), a file
    named .mp4 that is not a video, a text file, and the basketball clip's start when ../shared is there."""
    folder = tmp_path_factory.mktemp("clips")
    clips = {"walk.mp4": folder / "walk.mp4"}
    write_clip(clips["walk.mp4"], photo_frames(24))
    if (start := basketball_start(folder / "basketball.mp4")) is not None:
        clips["sub/basketball.mp4"] = start
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    for bucket in (CLIPS, RESULTS):
        s3.create_bucket(Bucket=bucket)
    for name, path in clips.items():
        s3.upload_file(str(path), CLIPS, "in/" + name)
    s3.put_object(Bucket=CLIPS, Key="in/broken.mp4", Body=b"\0" * 1000)
    s3.put_object(Bucket=CLIPS, Key="in/notes.txt", Body=b"not a video")
    text = DEFINITION.read_text().replace("${VideoFunctionArn}", FUNCTION_ARN)

    def invoke(resource: str, event: dict) -> dict:
        assert resource == FUNCTION_ARN
        return handler.lambda_handler(event, Context())

    machine = Machine(json.loads(text), invoke, s3)
    output = machine.start(JOB)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=RESULTS).get("Contents", []))
    return {"s3": s3, "machine": machine, "output": output, "keys": keys, "clips": clips}


def local_run(handler, clip: Path, out: Path) -> Path:
    """`python -m local.video CLIP OUT --segment-seconds 1 --overlap-seconds 0.3` in process, same models."""
    from local.video import Segmenting, track_clip
    from pose.track import TrackOptions

    track_clip(clip, out, handler.MODELS, TrackOptions(), segmenting=Segmenting(JOB["segment_seconds"],
                                                                             JOB["overlap_seconds"]))
    return out


def results(run, name: str, file: str) -> bytes:
    return run["s3"].get_object(Bucket=RESULTS, Key=f"run/{name}/{file}")["Body"].read()


def assert_like_local(run, handler, tmp_path, key: str) -> dict:
    name = key.rsplit(".", 1)[0]
    local = local_run(handler, run["clips"][key], tmp_path / "local")
    tracks = json.loads(results(run, name, "tracks.json"))
    assert tracks == json.loads((local / "tracks.json").read_text())
    assert len(tracks["segments"]) >= 2
    (tmp_path / "annotated.mp4").write_bytes(results(run, name, "annotated.mp4"))
    with av.open(str(tmp_path / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        times = [round(float(f.time), 3) for f in container.decode(stream)]
    assert times == [round(f["time"], 3) for f in tracks["frames"]]  # every frame, at its time
    return tracks


def test_a_clip_in_segments_gives_what_the_local_segmented_run_gives(run, handler, tmp_path):
    tracks = assert_like_local(run, handler, tmp_path, "walk.mp4")
    assert tracks["frame_count"] == 24 and len(tracks["segments"]) == 3
    assert {p["track_id"] for f in tracks["frames"] for p in f["people"]} == {1}  # one person, one id throughout
    steps = [name for name, event, _ in run["machine"].tasks if event.get("key", event.get("clip", {}).get("key")) == "in/walk.mp4"]
    assert steps == ["Plan"] + ["Track"] * 3 + ["Join"] + ["DrawPart"] * 3 + ["Concat"]


def test_the_basketball_clip_in_segments_gives_what_the_local_run_gives(run, handler, tmp_path):
    if "sub/basketball.mp4" not in run["clips"]:
        pytest.skip(f"{BASKETBALL} is absent: clone the project with ../shared beside it to run this test")
    tracks = assert_like_local(run, handler, tmp_path, "sub/basketball.mp4")
    assert tracks["frame_count"] == 60 and len(tracks["segments"]) == 3
    long = {t["track_id"] for t in tracks["tracks"] if t["frames"] >= 30}
    assert len(long) == 2  # the two players, each one id across the segments' boundaries


def test_a_file_that_is_not_a_video_is_an_error_record_and_the_others_complete(run):
    record = json.loads(results(run, "broken", "error.json"))
    assert record["file"] == "broken.mp4" and record["people"] == []
    assert record["error"]["code"] == "unsupported_image"
    assert run["machine"].failures == []  # a bad clip is a record, not a failed child
    expected = {"run/broken/error.json"} | {f"run/{k.rsplit('.', 1)[0]}/{f}" for k in run["clips"]
                                            for f in ("tracks.json", "annotated.mp4")}
    assert set(run["keys"]) == expected  # the segments' records and parts are gone; notes.txt left alone
    assert not [e for n, e, _ in run["machine"].tasks if e.get("key") == "in/notes.txt"]


@pytest.mark.parametrize("faststart", [True, False], ids=["index first", "index last"])
def test_a_segment_reads_its_own_stretch_of_the_clip_not_the_whole_object(handler, endpoint, tmp_path, faststart):
    # the last of 4 segments of a clip with a keyframe every 8 frames, read by range in 16 KB blocks (the
    # function reads 4 MB ones: a clip this small would be one block); plan demuxes the whole clip once. The
    # frames are grained (noise) so that they weigh what a camera's do against the container's header
    from test_video_seek import GOP, gop_clip

    rng = np.random.default_rng(0)
    grained = [np.clip(f.astype(np.int16) + rng.integers(-12, 13, f.shape), 0, 255).astype(np.uint8)
               for f in photo_frames(120)]
    path = gop_clip(tmp_path / "long.mp4", grained, faststart=faststart)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    bucket = f"seek-{faststart}".lower()
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(path), bucket, "in/long.mp4")
    job = {"input": {"bucket": bucket, "prefix": "in/"}, "output": {"bucket": bucket, "prefix": "out/"},
           "segment_seconds": 3.5, "overlap_seconds": 0.5}
    size = path.stat().st_size
    with mock.patch.object(handler, "READ_BYTES", 16 * 1024):
        plan = handler.lambda_handler({"step": "plan", "job": job, "key": "in/long.mp4", "size": size}, Context())
        assert [s["start"] for s in plan["segments"]] == [0, 30, 60, 90]
        last = plan["segments"][-1]
        reply = handler.lambda_handler({"step": "track", "job": job, "clip": plan["clip"], "segment": last}, Context())
    assert reply["frames"] == 30 and not reply["truncated"]
    assert reply["decoded"] <= 30 + GOP  # the segment's frames and at most a GOP before them, of 120
    assert reply["bytes_read"] < 0.6 * size
    print(f"{'faststart' if faststart else 'moov at the end'}: the last of 4 segments read {reply['bytes_read']:,} "
          f"of {size:,} bytes ({reply['bytes_read'] / size:.0%}), decoded {reply['decoded']} frames of 120")


def test_a_clip_longer_than_one_machine_takes_is_planned_in_segments(handler, endpoint, tmp_path):
    # 11 minutes (at 1 frame a second, 32 x 32 pixels: cheap to make): over `make video`'s 10-minute limit,
    # within the video function's, whose segments run side by side
    from video_io import open_clip

    clip = tmp_path / "long.mp4"
    write_clip(clip, [np.full((32, 32, 3), i % 256, np.uint8) for i in range(660)], fps=1)
    with pytest.raises(TooLarge):
        open_clip(clip)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket="long-clips")
    s3.upload_file(str(clip), "long-clips", "in/long.mp4")
    job = {"input": {"bucket": "long-clips", "prefix": "in/"}, "output": {"bucket": "long-clips", "prefix": "out/"}}
    planned = handler.lambda_handler({"step": "plan", "job": job, "key": "in/long.mp4", "size": clip.stat().st_size},
                                     Context())
    assert planned["done"] is False and planned["clip"]["frames"] == 660
    segments = planned["segments"]
    assert len(segments) == 23 and segments[-1]["end"] == 660  # 30 s segments, each starting 29 s after the last
    assert all(s["seek"] is not None for s in segments)  # each starts from a keyframe, not the clip's start


def test_an_object_shorter_than_its_size_said_ends_a_read_rather_than_hang(handler, endpoint):
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket="shrunk-clips")
    s3.put_object(Bucket="shrunk-clips", Key="in/a.mp4", Body=b"x" * 100)
    file = handler.S3Object("shrunk-clips", "in/a.mp4", size=300, block=64)  # replaced by a shorter one since
    assert file.read() == b"x" * 100 and file.read(10) == b""
