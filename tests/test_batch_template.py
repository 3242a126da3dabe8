"""The batch state machine in template.yaml and statemachine/batch.asl.json, checked offline.

No Step Functions engine runs here. What is checked: the definition is JSON, every substitution it names
is one the template gives (and nothing else is left to substitute), cfn-lint's Amazon States Language
schema accepts it, the Distributed Map has its reader, batcher, concurrency, tolerance, retries and writer,
and the roles as SAM translates them grant S3 only on the template's buckets and prefixes.
`sam validate --lint` of the whole template runs in test_template.py.
"""

from __future__ import annotations

import json
import re

import pytest

from test_template import ROOT, refused_by, translate

pytestmark = pytest.mark.aws

DEFINITION = ROOT / "statemachine" / "batch.asl.json"
BATCH_RESOURCES = ("BatchFunction", "BatchFunctionLogGroup", "GatherFunction", "GatherFunctionLogGroup",
                   "BatchStateMachine")
EXAMPLE = {"BatchFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:batch",
           "GatherFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:gather",
           "BatchSize": "20", "BatchMaxConcurrency": "100", "BatchToleratedFailurePercentage": "5"}


@pytest.fixture(scope="module")
def template() -> dict:
    from samcli.yamlhelper import yaml_parse

    return yaml_parse((ROOT / "template.yaml").read_text())


@pytest.fixture(scope="module")
def translated(template) -> dict:
    return translate(template)


@pytest.fixture(scope="module")
def substitutions(template) -> dict:
    return template["Resources"]["BatchStateMachine"]["Properties"]["DefinitionSubstitutions"]


def definition_with(values: dict) -> dict:
    text = DEFINITION.read_text()
    for name, value in values.items():
        text = text.replace("${%s}" % name, value)
    assert "${" not in text, re.findall(r"\$\{[^}]*\}", text)
    return json.loads(text)


def test_the_definition_is_json_and_its_substitutions_are_the_templates(template, substitutions):
    json.loads(DEFINITION.read_text())  # valid JSON as written: numbers are substituted inside strings
    named = set(re.findall(r"\$\{(\w+)\}", DEFINITION.read_text()))
    assert named == set(substitutions) == set(EXAMPLE)
    assert substitutions["BatchFunctionArn"] == {"Fn::GetAtt": ["BatchFunction", "Arn"]}
    assert substitutions["GatherFunctionArn"] == {"Fn::GetAtt": ["GatherFunction", "Arn"]}
    for name in ("BatchSize", "BatchMaxConcurrency", "BatchToleratedFailurePercentage"):
        assert substitutions[name] == {"Ref": name} and template["Parameters"][name]["Type"] == "Number"
    settings = definition_with(EXAMPLE)["States"]["Settings"]["Parameters"]
    assert settings["batch_size.$"] == "States.StringToJson('20')"  # a number once the Pass state runs


def test_cfn_lint_accepts_the_definition_and_would_catch_a_broken_one(tmp_path):
    """cfn-lint checks an inline Definition against its States Language schema (rule E3601)."""
    from cfnlint.api import lint_all

    def lint(definition: dict) -> list:
        doc = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Machine": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/r", "Definition": definition}}}}
        return [m for m in lint_all(json.dumps(doc)) if m.rule.id.startswith("E")]

    good = definition_with(EXAMPLE)
    assert lint(good) == []
    broken = json.loads(json.dumps(good))
    broken["States"]["Photos"]["MaxConcurency"] = 10
    assert any(m.rule.id == "E3601" for m in lint(broken))


def test_a_distributed_map_over_the_listing_in_batches_with_retries_and_a_writer():
    states = definition_with(EXAMPLE)["States"]
    assert definition_with(EXAMPLE)["StartAt"] == "Settings" and states["Settings"]["Next"] == "Photos"
    photos = states["Photos"]
    assert photos["Type"] == "Map" and photos["Next"] == "Gather"
    assert photos["ItemReader"] == {"Resource": "arn:aws:states:::s3:listObjectsV2",
                                    "Parameters": {"Bucket.$": "$.input.bucket", "Prefix.$": "$.input.prefix"}}
    assert photos["ItemSelector"] == {"key.$": "$$.Map.Item.Value.Key", "size.$": "$$.Map.Item.Value.Size",
                                      "index.$": "$$.Map.Item.Index"}  # what handler/batch.py reads
    settings = states["Settings"]["Parameters"]
    batcher = photos["ItemBatcher"]
    assert batcher["MaxItemsPerBatchPath"] == "$.settings.batch_size"
    assert batcher["BatchInput"] == {"job.$": "$$.Execution.Input", "execution.$": "$$.Execution.Name"}
    assert photos["MaxConcurrencyPath"] == "$.settings.max_concurrency"
    assert photos["ToleratedFailurePercentagePath"] == "$.settings.tolerated_failure_percentage"
    assert settings["max_concurrency.$"] == "States.StringToJson('100')"
    assert settings["tolerated_failure_percentage.$"] == "States.StringToJson('5')"
    processor = photos["ItemProcessor"]
    assert processor["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"}
    task = processor["States"][processor["StartAt"]]
    assert task["Resource"] == "arn:aws:states:::lambda:invoke"
    assert task["Parameters"]["FunctionName"] == EXAMPLE["BatchFunctionArn"]
    throttled = task["Retry"][0]
    assert {"Lambda.TooManyRequestsException", "Lambda.ServiceException"} <= set(throttled["ErrorEquals"])
    assert throttled["BackoffRate"] > 1 and throttled["MaxAttempts"] >= 3 and throttled["JitterStrategy"] == "FULL"
    writer = photos["ResultWriter"]
    assert writer["Resource"] == "arn:aws:states:::s3:putObject"
    assert writer["Parameters"] == {"Bucket.$": "$.output.bucket", "Prefix.$": "$.settings.map_results_prefix"}
    assert settings["map_results_prefix.$"] == "States.Format('{}map', $.output.prefix)"  # under the output prefix
    gather = states["Gather"]
    assert gather["Parameters"]["FunctionName"] == EXAMPLE["GatherFunctionArn"] and gather["End"] is True


def test_the_batch_function_fits_inside_an_express_child_with_its_retry(template):
    """An Express child workflow lives at most 5 minutes: one attempt, the retry's wait, one more attempt."""
    timeout = template["Resources"]["BatchFunction"]["Properties"]["Timeout"]
    task = definition_with(EXAMPLE)["States"]["Photos"]["ItemProcessor"]["States"]["Batch"]
    (failed,) = [r for r in task["Retry"] if r["ErrorEquals"] == ["States.TaskFailed"]]
    assert (1 + failed["MaxAttempts"]) * timeout + failed["IntervalSeconds"] < 300


def test_batch_resources_exist_only_when_both_buckets_are_given(template):
    resources = template["Resources"]
    for name in BATCH_RESOURCES:
        assert resources[name]["Condition"] == "HasBatch", name
    assert resources["BatchModelS3ReadPolicy"]["Condition"] == "HasBatchAndModelS3Uri"
    assert template["Conditions"]["HasBatch"] == {"Fn::And": [
        {"Fn::Not": [{"Fn::Equals": [{"Ref": "BatchInputBucket"}, ""]}]},
        {"Fn::Not": [{"Fn::Equals": [{"Ref": "BatchOutputBucket"}, ""]}]}]}
    assert template["Parameters"]["BatchInputBucket"]["Default"] == ""
    for name in ("BatchStateMachineArn", "BatchInputUri", "BatchOutputUri"):
        assert template["Outputs"][name]["Condition"] == "HasBatch"


def test_the_batch_function_runs_the_same_code_with_the_same_layers(template, translated):
    resources = template["Resources"]
    batch, pose = resources["BatchFunction"]["Properties"], resources["PoseFunction"]["Properties"]
    assert batch["CodeUri"] == pose["CodeUri"] == "handler/" and batch["Handler"] == "batch.lambda_handler"
    assert batch["Layers"] == pose["Layers"]
    for name in ("MODEL_PATH", "DETECTOR_PATH"):
        assert batch["Environment"]["Variables"][name] == pose["Environment"]["Variables"][name], name
    assert batch["MemorySize"] == {"Ref": "BatchMemorySize"}
    assert template["Parameters"]["BatchMemorySize"]["MinValue"] >= 1769
    gather = resources["GatherFunction"]["Properties"]
    assert gather["Handler"] == "gather.lambda_handler" and "Layers" not in gather  # plain boto3
    machine = translated["Resources"]["BatchStateMachine"]
    assert machine["Type"] == "AWS::StepFunctions::StateMachine" and machine["Properties"]["StateMachineType"] == "STANDARD"
    assert set(machine["Properties"]["DefinitionSubstitutions"]) == set(EXAMPLE)


def s3_statements(translated: dict, role: str) -> list[dict]:
    policies = translated["Resources"][role]["Properties"].get("Policies", [])
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    return [s for s in statements if any(a.startswith("s3:") for a in actions(s))]


def actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def resource(statement: dict) -> str:
    return statement["Resource"]["Fn::Sub"]


IN_OBJECTS = "arn:${AWS::Partition}:s3:::${BatchInputBucket}/${BatchInputPrefix}*"
OUT_OBJECTS = "arn:${AWS::Partition}:s3:::${BatchOutputBucket}/${BatchOutputPrefix}*"


def test_the_roles_reach_only_the_input_and_output_prefixes(translated):
    batch = {(a, resource(s)) for s in s3_statements(translated, "BatchFunctionRole") for a in actions(s)}
    assert batch == {("s3:GetObject", IN_OBJECTS), ("s3:PutObject", OUT_OBJECTS)}
    gather = s3_statements(translated, "GatherFunctionRole")
    machine = s3_statements(translated, "BatchStateMachineRole")
    for statements, bucket, prefix in ((gather, "BatchOutputBucket", "BatchOutputPrefix"),
                                       (machine, "BatchInputBucket", "BatchInputPrefix")):
        (listing,) = [s for s in statements if "s3:ListBucket" in actions(s)]
        assert actions(listing) == ["s3:ListBucket"] and resource(listing) == "arn:${AWS::Partition}:s3:::${%s}" % bucket
        assert listing["Condition"] == {"StringLike": {"s3:prefix": {"Fn::Sub": "${%s}*" % prefix}}}
    for statements in (gather, machine):
        for s in statements:
            if "s3:ListBucket" not in actions(s):
                assert resource(s) == OUT_OBJECTS and "s3:DeleteObject" not in actions(s)
    # no role of the batch names any other bucket, or any bucket by wildcard
    for role in ("BatchFunctionRole", "GatherFunctionRole", "BatchStateMachineRole"):
        text = json.dumps(translated["Resources"][role])
        assert "s3:::*" not in text and '"Resource": "*"' not in text, role


def test_the_state_machine_may_invoke_its_two_functions_and_run_its_own_children(translated):
    policies = translated["Resources"]["BatchStateMachineRole"]["Properties"]["Policies"]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    invoked = {s["Resource"]["Fn::Sub"][1]["functionName"]["Ref"] for s in statements
               if actions(s) == ["lambda:InvokeFunction"]}
    assert invoked == {"BatchFunction", "GatherFunction"}
    (start,) = [s for s in statements if actions(s) == ["states:StartExecution"]]
    assert resource(start).endswith(":stateMachine:${AWS::StackName}-batch")
    assert translated["Resources"]["BatchStateMachine"]["Properties"]["StateMachineName"] == {
        "Fn::Sub": "${AWS::StackName}-batch"}


@pytest.mark.parametrize("prefix, ok", [("", True), ("photos/", True), ("a/b c/", True), ("photos", False),
                                        ("photos/*", False), ("${aws:username}/", False)])
def test_batch_prefix_patterns(template, prefix, ok):
    assert bool(re.fullmatch(template["Parameters"]["BatchInputPrefix"]["AllowedPattern"], prefix)) is ok
    out_ok = ok and prefix != ""  # the output prefix may not be the whole bucket
    assert bool(re.fullmatch(template["Parameters"]["BatchOutputPrefix"]["AllowedPattern"], prefix)) is out_ok


@pytest.mark.parametrize("bucket, prefix, refused", [("my-photos", "", True), ("my-photos", "photos/", False),
                                                     ("", "", False)])
def test_the_batch_reads_under_a_prefix_never_the_whole_bucket(template, bucket, prefix, refused):
    """The read grants end in ${BatchInputPrefix}*: an empty prefix would grant the whole bucket, so
    CloudFormation refuses it once there is a batch (an empty prefix without one grants nothing)."""
    got = refused_by(template, {"BatchInputBucket": bucket, "BatchInputPrefix": prefix, "BatchOutputBucket": "my-results"})
    assert got == (["BatchReadsUnderAPrefix"] if refused else [])
