"""The video function and state machine in template.yaml and statemachine/video.asl.json, checked offline as
test_batch_template.py checks the batch's: substitutions, cfn-lint's States Language schema, the states and
their children's type, the function's size and limits, and roles reaching only the batch's prefixes.
tests/test_video_aws.py plays the definition against moto's S3."""

from __future__ import annotations

import json
import re

import pytest

from test_batch_template import IN_OBJECTS, OUT_OBJECTS, actions, resource, s3_statements
from test_batch_template import template, translated  # noqa: F401  (the fixtures)
from local import catalog
from test_template import ROOT

pytestmark = pytest.mark.aws

DEFINITION = ROOT / "statemachine" / "video.asl.json"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:video"


def definition() -> dict:
    return json.loads(DEFINITION.read_text().replace("${VideoFunctionArn}", ARN))


def test_the_definition_names_only_the_templates_substitution(template):
    named = set(re.findall(r"\$\{(\w+)\}", DEFINITION.read_text()))
    substitutions = template["Resources"]["VideoStateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert named == set(substitutions) == {"VideoFunctionArn"}
    assert substitutions["VideoFunctionArn"] == {"Fn::GetAtt": ["VideoFunction", "Arn"]}


def test_cfn_lint_accepts_the_definition():
    from cfnlint.api import lint_all

    doc = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Machine": {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/r", "Definition": definition()}}}}
    assert [str(m) for m in lint_all(json.dumps(doc)) if m.rule.id.startswith("E")] == []


def test_clips_then_plan_segments_join_draw_concat_in_standard_children():
    top = definition()["States"]
    clips = top["Clips"]
    assert clips["ItemReader"]["Parameters"] == {"Bucket.$": "$.input.bucket", "Prefix.$": "$.input.prefix"}
    assert clips["ItemSelector"]["key.$"] == "$$.Map.Item.Value.Key"
    assert clips["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert clips["ResultWriter"]["Parameters"]["Prefix.$"] == "$.settings.map_results_prefix"
    states = clips["ItemProcessor"]["States"]
    suffixes = {r["StringMatches"] for r in states["IsVideo"]["Choices"][0]["Or"]}
    assert {"*.mp4", "*.MP4", "*.webm", "*.mov", "*.avi"} <= suffixes
    order, name = [], clips["ItemProcessor"]["StartAt"]
    while name in states and states[name]["Type"] != "Succeed":
        order.append(name)
        state = states[name]
        name = state.get("Next") or (state["Choices"][0]["Next"] if name == "IsVideo" else state.get("Default"))
    assert order == ["IsVideo", "Plan", "Planned", "Segments", "Join", "Draw", "Concat"]
    segments = states["Segments"]
    assert segments["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert segments["ItemsPath"] == states["Draw"]["ItemsPath"] == "$.plan.segments"
    tasks = [states[n] for n in ("Plan", "Join", "Concat")] + [
        m["ItemProcessor"]["States"][m["ItemProcessor"]["StartAt"]] for m in (segments, states["Draw"])]
    assert all(t["Resource"] == ARN and "Lambda.TooManyRequestsException" in t["Retry"][0]["ErrorEquals"]
               for t in tasks)
    steps = [states[n]["Parameters"]["step"] for n in ("Plan", "Join", "Concat")]
    steps += [m["ItemSelector"]["step"] for m in (segments, states["Draw"])]
    assert steps == ["plan", "join", "concat", "track", "draw"]  # handler/video.py's STEPS


def test_the_video_function_is_sized_for_a_segment_with_its_own_layer(template):
    resources, parameters = template["Resources"], template["Parameters"]
    video = resources["VideoFunction"]["Properties"]
    assert video["Handler"] == "video.lambda_handler" and video["Timeout"] == 900
    assert video["MemorySize"] == {"Ref": "VideoMemorySize"}
    assert video["EphemeralStorage"] == {"Size": {"Ref": "VideoEphemeralStorage"}}
    for name in ("VideoMemorySize", "VideoEphemeralStorage"):
        assert parameters[name]["MaxValue"] == 10240 and parameters[name]["Default"] <= 10240
    assert video["Layers"] == [{"Ref": "VideoLayer"}]  # PyAV, the dependencies and the default models
    variables = video["Environment"]["Variables"]
    assert variables["MODEL_PATH"] == f"/opt/model/{catalog.default('pose')}.onnx"
    batch = resources["BatchFunction"]["Properties"]
    for name in ("MODEL_S3_URI", "MODEL_SHA256", "DETECTOR_PATH"):
        assert variables[name] == batch["Environment"]["Variables"][name], name
    assert f"/opt/model/{catalog.default('detector')}.onnx" in json.dumps(variables["DETECTOR_PATH"])
    assert resources["VideoLayer"]["Properties"]["ContentUri"] == "layers/video/"
    assert "-r requirements.txt" in (ROOT / "handler" / "requirements-video.txt").read_text()
    for name in ("VideoFunction", "VideoLayer", "VideoStateMachine", "VideoFunctionLogGroup"):
        assert resources[name]["Condition"] == "HasBatch", name
    assert resources["VideoModelS3ReadPolicy"]["Condition"] == "HasBatchAndModelS3Uri"


def test_the_video_roles_reach_only_the_batch_prefixes(translated):
    function = {(a, resource(s)) for s in s3_statements(translated, "VideoFunctionRole") for a in actions(s)}
    assert function == {("s3:GetObject", IN_OBJECTS), ("s3:GetObject", OUT_OBJECTS), ("s3:PutObject", OUT_OBJECTS),
                        ("s3:DeleteObject", OUT_OBJECTS), ("s3:AbortMultipartUpload", OUT_OBJECTS)}
    machine = s3_statements(translated, "VideoStateMachineRole")
    (listing,) = [s for s in machine if "s3:ListBucket" in actions(s)]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": {"Fn::Sub": "${BatchInputPrefix}*"}}}
    assert all(resource(s) == OUT_OBJECTS for s in machine if s is not listing)
    machine_type = translated["Resources"]["VideoStateMachine"]["Properties"]["StateMachineType"]
    assert machine_type == "STANDARD"
    for role in ("VideoFunctionRole", "VideoStateMachineRole"):
        text = json.dumps(translated["Resources"][role])
        assert "s3:::*" not in text and '"Resource": "*"' not in text, role
