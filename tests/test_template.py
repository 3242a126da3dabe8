"""The SAM template: it validates offline, and says what the service needs.

`sam validate --lint` (SAM translator + cfn-lint) and plain `sam validate` both run offline with
no AWS credentials. The content checks read the template as written and as SAM translates it
to CloudFormation (the translation runs locally, like `sam validate`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pose.settings import DEFAULT_DETECTOR_PATH, DEFAULT_MODEL_PATH

from local import catalog

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
SAM = Path(sys.executable).with_name("sam")
API_GATEWAY_TIMEOUT_S = 29
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
ENV_VARS = {
    "MODEL_PATH",
    "MODEL_S3_URI",
    "MODEL_SHA256",
    "DETECTOR_PATH",
    "ALLOWED_ORIGIN",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "LOG_LEVEL",
}


def sam_env() -> dict[str, str]:
    """An environment in which sam cannot reach AWS or an instance-metadata endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def run_sam(*args: str) -> subprocess.CompletedProcess:
    sam = str(SAM) if SAM.exists() else "sam"
    return subprocess.run(
        [sam, *args, "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=sam_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def template() -> dict:
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


@pytest.fixture(scope="module")
def function(resources) -> dict:
    return resources["PoseFunction"]


@pytest.fixture(scope="module")
def api(resources) -> dict:
    return resources["PoseApi"]["Properties"]


@pytest.fixture(scope="module")
def translated(template) -> dict:
    return translate(template)


def translate(template: dict, parameters: dict[str, str] | None = None) -> dict:
    """The template as SAM translates it to CloudFormation (offline, as `sam validate` does), for
    these parameter values (the defaults for the others)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(template)
    for resource in sam["Resources"].values():  # the translator wants S3 locations, not folders
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in props:
                props[key] = "s3://bucket/code.zip"
        if "DefinitionUri" in props:  # a state machine's definition file, inline so that its content is checked
            props["Definition"] = json.loads((ROOT / props.pop("DefinitionUri")).read_text())
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name="us-east-1"))
    return translator.translate(sam, parameter_values=dict(parameters or {}), get_managed_policy_map=lambda: {})


def of_type(translated: dict, cfn_type: str) -> dict:
    return {k: v for k, v in translated["Resources"].items() if v["Type"] == cfn_type}


# --- sam validate -------------------------------------------------------------------------


def test_sam_validate_lint():
    r = run_sam("validate", "--lint")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is a valid SAM Template" in r.stdout + r.stderr


def test_sam_validate_with_region():
    r = run_sam("validate", "--region", "us-east-1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is a valid SAM Template" in r.stdout + r.stderr


# --- the function -------------------------------------------------------------------------


def test_runtime_architecture_and_tracing(template, function):
    g = template["Globals"]["Function"]
    props = {**g, **function["Properties"]}
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["x86_64"]
    assert props["Tracing"] == "Active"
    assert props["Handler"] == "app.lambda_handler"
    assert props["CodeUri"] == "handler/"


def test_every_part_builds_with_make_not_python312(resources):
    """BuildMethod makefile everywhere: sam build needs no Docker and no local Python 3.12."""
    buildable = {k: v for k, v in resources.items() if v["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")}
    assert set(buildable) == {"PoseFunction", "BatchFunction", "GatherFunction", "VideoFunction", "DepsLayer",
                              "ModelLayer", "VideoLayer"}
    for logical_id, resource in buildable.items():
        assert resource.get("Metadata", {}).get("BuildMethod") == "makefile", logical_id
        folder = resource["Properties"].get("CodeUri") or resource["Properties"]["ContentUri"]
        makefile = (ROOT / folder / "Makefile").read_text()
        assert re.search(rf"^build-{logical_id}:", makefile, re.M), f"{folder}Makefile has no build-{logical_id}"


def test_timeout_fits_under_api_gateway(template, function):
    timeout = function["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
    assert isinstance(timeout, int) and 3 <= timeout < API_GATEWAY_TIMEOUT_S


def test_memory_is_a_parameter_of_at_least_one_vcpu(template):
    assert template["Globals"]["Function"]["MemorySize"] == {"Ref": "MemorySize"}
    p = template["Parameters"]["MemorySize"]
    assert p["Type"] == "Number"
    assert 1769 <= p["Default"] <= 10240  # 1769 MB = one full vCPU
    assert p["MinValue"] >= 128 and p["MaxValue"] <= 10240


def test_environment(function, template):
    env = function["Properties"]["Environment"]["Variables"]
    assert ENV_VARS <= set(env)
    assert env["MODEL_PATH"] == {"Fn::Sub": "/opt/model/${ModelName}.onnx"}
    assert env["ALLOWED_ORIGIN"] == {"Fn::If": ["HasWebsite", {"Fn::Sub": "https://${WebDistribution.DomainName}"},
                                                {"Ref": "AllowedOrigin"}]}
    # The optional ones are absent (not empty) when their parameter is empty.
    assert env["MODEL_S3_URI"] == {"Fn::If": ["HasModelS3Uri", {"Ref": "ModelS3Uri"}, {"Ref": "AWS::NoValue"}]}
    assert env["MODEL_SHA256"] == {"Fn::If": ["HasModelSha256", {"Ref": "ModelSha256"}, {"Ref": "AWS::NoValue"}]}
    assert "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" not in env  # Lambda sets it


def test_the_detector_has_a_source_in_every_configuration(function, template):
    """Always set, never left to the handler's default: the model layer's detector, or "none"."""
    env = function["Properties"]["Environment"]["Variables"]
    detector = f"/opt/model/{catalog.default('detector')}.onnx"  # the default of models/models.json
    assert env["DETECTOR_PATH"] == {"Fn::If": ["HasDetector", detector, "none"]}
    assert template["Conditions"]["HasDetector"] == {"Fn::Equals": [{"Ref": "DetectPeople"}, "true"]}
    assert template["Parameters"]["DetectPeople"]["Default"] == "true"
    # ... which is the handler's own default too, and the template's description names it
    assert DEFAULT_DETECTOR_PATH == detector and detector in template["Parameters"]["DetectPeople"]["Description"]


@pytest.mark.parametrize("model_s3_uri", ["", "s3://my-models/pose.onnx"])
@pytest.mark.parametrize("detect_people", ["true", "false"])
def test_the_model_layer_is_attached_whenever_a_file_comes_from_it(template, function, model_s3_uri, detect_people):
    """The pose model (no ModelS3Uri) or the person detector (DetectPeople): either needs the layer."""
    params = {"ModelS3Uri": model_s3_uri, "DetectPeople": detect_people}
    props = evaluate(function["Properties"], template, params, substitute=True)
    needed = model_s3_uri == "" or detect_people == "true"
    assert props["Layers"] == [{"Ref": "DepsLayer"}] + ([{"Ref": "ModelLayer"}] if needed else [])
    env = props["Environment"]["Variables"]
    assert env["DETECTOR_PATH"].startswith("/opt/model/") if detect_people == "true" else env["DETECTOR_PATH"] == "none"
    assert ("MODEL_S3_URI" in env) is bool(model_s3_uri)
    assert template["Resources"]["ModelLayer"]["Condition"] == "UseModelLayer"
    assert holds(template["Conditions"]["UseModelLayer"], template, parameter_values(template, params)) is needed


def test_layer_contents_and_compatibility(resources):
    for logical_id, folder in (("DepsLayer", "layers/deps/"), ("ModelLayer", "layers/model/")):
        props = resources[logical_id]["Properties"]
        assert props["ContentUri"] == folder
        assert props["CompatibleRuntimes"] == ["python3.12"]
        assert props["CompatibleArchitectures"] == ["x86_64"]


def test_model_names_match_the_model_layer(template):
    """The ModelName values the template accepts are the pose models models/models.json puts in the model
    layer, in its order; the template's default is its default, and the handler's and `make demo`'s."""
    allowed = template["Parameters"]["ModelName"]["AllowedValues"]
    default = template["Parameters"]["ModelName"]["Default"]
    assert allowed == catalog.served("pose")
    described = " ".join(template["Parameters"]["ModelName"]["Description"].split())
    assert all(catalog.get(name).title in described for name in allowed), described
    assert default == catalog.default("pose")
    assert DEFAULT_MODEL_PATH == f"/opt/model/{default}.onnx"
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert re.search(r"out/annotated.png; MODEL=([^)]+)\)", shown).group(1) == default  # make demo, serve, invoke


# --- the model in S3: one object, only when asked for -------------------------------------


def test_s3_policy_is_conditional_and_scoped_to_the_object(template, resources):
    policy = resources["ModelS3ReadPolicy"]
    assert policy["Type"] == "AWS::IAM::RolePolicy"
    assert policy["Condition"] == "HasModelS3Uri"
    assert template["Conditions"]["HasModelS3Uri"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ModelS3Uri"}, ""]}]}
    assert policy["Properties"]["RoleName"] == {"Ref": "PoseFunctionRole"}
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "s3:GetObject"
    assert statement["Resource"] == {
        "Fn::Sub": [
            "arn:${AWS::Partition}:s3:::${BucketAndKey}",
            {"BucketAndKey": {"Fn::Select": [1, {"Fn::Split": ["s3://", {"Ref": "ModelS3Uri"}]}]}},
        ]
    }
    assert template["Parameters"]["ModelS3Uri"]["Default"] == ""


def test_no_other_s3_access(translated):
    """The function's own role has only the basic execution and X-Ray policies."""
    role = translated["Resources"]["PoseFunctionRole"]["Properties"]
    assert "Policies" not in role or not role["Policies"]
    assert sorted(a.rsplit("/", 1)[-1] for a in role["ManagedPolicyArns"]) == ["AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"]
    assert translated["Resources"]["PoseFunctionRole"]["Type"] == "AWS::IAM::Role"  # what ModelS3ReadPolicy names


@pytest.mark.parametrize(
    "uri, ok",
    [
        ("", True),
        ("s3://my-models/pose/pp-tinypose-256x192.onnx", True),
        ("s3://my.bucket-1/a", True),
        ("s3://my-models/*", False),  # a wildcard would grant more than one object
        ("s3://my-models/model?.onnx", False),
        ("s3://my-models/${aws:username}.onnx", False),  # an IAM policy variable
        ("s3://my-models/", False),
        ("s3://My_Bucket/key", False),
        ("https://my-models.s3.amazonaws.com/key", False),
        ("arn:aws:s3:::my-models/key", False),
    ],
)
def test_model_s3_uri_pattern(template, uri, ok):
    pattern = template["Parameters"]["ModelS3Uri"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, uri)) is ok


@pytest.mark.parametrize(
    "sha, ok", [("", True), ("a" * 64, True), ("A" * 64, False), ("a" * 63, False), ("g" * 64, False)]
)
def test_model_sha256_pattern(template, sha, ok):
    assert bool(re.fullmatch(template["Parameters"]["ModelSha256"]["AllowedPattern"], sha)) is ok


# --- the API ------------------------------------------------------------------------------

API_ROUTES = (("/pose", "post"), ("/track", "post"), ("/health", "get"))  # each: key rule, alias live, throttle


def test_binary_media_types_are_the_image_types_only(api, translated):
    types = api["BinaryMediaTypes"]
    assert set(types) == IMAGE_TYPES and len(types) == len(IMAGE_TYPES)
    assert not any("*" in t for t in types)  # */* would make JSON and the CORS preflight binary
    (rest_api,) = of_type(translated, "AWS::ApiGateway::RestApi").values()
    assert set(rest_api["Properties"]["Body"]["x-amazon-apigateway-binary-media-types"]) == IMAGE_TYPES


def test_routes(function, translated):
    events = {(e["Properties"]["Path"], e["Properties"]["Method"].lower()) for e in function["Properties"]["Events"].values()}
    assert events == set(API_ROUTES)
    assert all(e["Properties"]["RestApiId"] == {"Ref": "PoseApi"} for e in function["Properties"]["Events"].values())
    (rest_api,) = of_type(translated, "AWS::ApiGateway::RestApi").values()
    paths = rest_api["Properties"]["Body"]["paths"]
    assert set(paths["/pose"]) == {"post", "options"}  # options: the CORS preflight
    assert set(paths["/track"]) == {"post", "options"}
    assert set(paths["/health"]) == {"get", "options"}
    assert paths["/pose"]["post"]["x-amazon-apigateway-integration"]["type"] == "aws_proxy"


def test_cors_uses_the_allowed_origin(api, template):
    origin = ORIGIN
    assert api["Cors"]["AllowOrigin"] == origin
    methods = api["Cors"]["AllowMethods"].strip("'").split(",")
    assert {"GET", "POST", "OPTIONS"} <= set(methods)
    assert "content-type" in api["Cors"]["AllowHeaders"].lower()
    assert "AllowCredentials" not in api["Cors"]  # a wildcard origin must never come with credentials


@pytest.mark.parametrize(
    "origin, ok",
    [
        ("*", True),
        ("https://example.com", True),
        ("http://localhost:8080", True),
        ("https://example.com/", False),
        ("https://a.example, https://b.example", False),
        ("'*'", False),  # a quote would break the '<value>' header mapping
        ("", False),
    ],
)
def test_allowed_origin_pattern(template, origin, ok):
    assert bool(re.fullmatch(template["Parameters"]["AllowedOrigin"]["AllowedPattern"], origin)) is ok


def test_gateway_responses_carry_cors(api, translated):
    origin = ORIGIN
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        assert api["GatewayResponses"][kind]["ResponseParameters"]["Headers"]["Access-Control-Allow-Origin"] == origin
    (rest_api,) = of_type(translated, "AWS::ApiGateway::RestApi").values()
    responses = rest_api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        assert responses[kind]["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == origin


def test_one_prod_stage_with_throttling(api, translated):
    stages = of_type(translated, "AWS::ApiGateway::Stage")
    assert [s["Properties"]["StageName"] for s in stages.values()] == ["Prod"]  # no stray "Stage" stage
    (stage,) = stages.values()
    (setting,) = stage["Properties"]["MethodSettings"]
    assert setting["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRate"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurst"}
    assert stage["Properties"]["TracingEnabled"] is True


def test_api_key_is_optional_and_off_by_default(template):
    p = template["Parameters"]["RequireApiKey"]
    assert p["Default"] == "false" and sorted(p["AllowedValues"]) == ["false", "true"]
    assert template["Conditions"]["HasApiKey"] == {"Fn::Equals": [{"Ref": "RequireApiKey"}, "true"]}
    quota = template["Parameters"]["ApiQuotaPerDay"]
    assert quota["Type"] == "Number" and quota["MinValue"] >= 1


@pytest.mark.parametrize("require_key", [True, False])
def test_api_key_guards_the_routes_but_never_the_preflight(template, translated, require_key):
    """The deployed API as CloudFormation resolves it, with RequireApiKey true and false."""
    (rest_api,) = of_type(translated, "AWS::ApiGateway::RestApi").values()
    body = evaluate(rest_api["Properties"]["Body"], template, {"RequireApiKey": str(require_key).lower()})
    assert body["components"]["securitySchemes"]["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    expected = [{"api_key": []}] if require_key else []
    for path, method in API_ROUTES:
        operation = body["paths"][path][method]
        assert operation["security"] == expected, (path, method)
        # The routes still reach the function (SAM merged the events' integrations in).
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        assert "${PoseFunctionAliaslive}" in integration["uri"]["Fn::Sub"]  # alias live
        # AddApiKeyRequiredToCorsPreflight: false. A browser's preflight sends no x-api-key.
        preflight = body["paths"][path]["options"]
        assert "security" not in preflight and preflight["x-amazon-apigateway-integration"]["type"] == "mock"
    assert "security" not in body  # no API-wide requirement that would also cover OPTIONS


def test_api_key_header_is_allowed_by_cors(api):
    headers = {h.strip().lower() for h in api["Cors"]["AllowHeaders"].strip("'").split(",")}
    assert {"content-type", "x-api-key"} <= headers


def test_usage_plan_binds_the_key_to_the_prod_stage(template, translated):
    resources = translated["Resources"]
    key, plan, link = (resources[n] for n in ("PoseApiKey", "PoseUsagePlan", "PoseUsagePlanKey"))
    assert (key["Type"], plan["Type"], link["Type"]) == (
        "AWS::ApiGateway::ApiKey", "AWS::ApiGateway::UsagePlan", "AWS::ApiGateway::UsagePlanKey")
    assert all(r["Condition"] == "HasApiKey" for r in (key, plan, link))
    assert key["Properties"]["Enabled"] is True and "Value" not in key["Properties"]  # API Gateway makes the secret
    (stage_name,) = of_type(translated, "AWS::ApiGateway::Stage")
    assert plan["Properties"]["ApiStages"] == [{"ApiId": {"Ref": "PoseApi"}, "Stage": {"Ref": stage_name}}]
    assert plan["Properties"]["Throttle"] == {"RateLimit": {"Ref": "ApiThrottleRate"}, "BurstLimit": {"Ref": "ApiThrottleBurst"}}
    assert plan["Properties"]["Quota"] == {"Limit": {"Ref": "ApiQuotaPerDay"}, "Period": "DAY"}
    assert link["Properties"] == {"KeyId": {"Ref": "PoseApiKey"}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": "PoseUsagePlan"}}
    outputs = template["Outputs"]
    assert outputs["ApiKeyId"]["Condition"] == outputs["ApiKeyValueCommand"]["Condition"] == "HasApiKey"
    assert "--include-value" in outputs["ApiKeyValueCommand"]["Value"]["Fn::Sub"]


def test_every_stack_update_redeploys_the_stage(template, monkeypatch):
    """Switching RequireApiKey or AllowedOrigin changes the API body behind an Fn::If, which SAM's
    deployment hash does not see: the stage would keep serving the old API without AlwaysDeploy.
    Two transforms of the same template a minute apart (two `sam deploy`s) give two deployments."""
    import time

    now = time.time()
    ids = []
    for offset in (0, 60):
        monkeypatch.setattr(time, "time", lambda: now + offset)
        ids.append(set(of_type(translate(template), "AWS::ApiGateway::Deployment")))
    assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]


def test_translated_function(translated):
    props = translated["Resources"]["PoseFunction"]["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["x86_64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Timeout"] < API_GATEWAY_TIMEOUT_S
    assert ENV_VARS <= set(props["Environment"]["Variables"])
    assert len(of_type(translated, "AWS::Lambda::LayerVersion")) == 3  # deps, models, video


def test_outputs(template):
    out = template["Outputs"]
    url = out["ApiUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("https://${PoseApi}.execute-api.${AWS::Region}.") and url.endswith("/Prod/")
    assert out["PoseFunctionArn"]["Value"] == {"Fn::GetAtt": ["PoseFunction", "Arn"]}


ORIGIN = {"Fn::If": ["HasWebsite", {"Fn::Sub": "'https://${WebDistribution.DomainName}'"},
                     {"Fn::Sub": "'${AllowedOrigin}'"}]}


def test_optional_website_is_a_private_bucket_behind_cloudfront(template, resources):
    assert template["Parameters"]["DeployWebsite"]["Default"] == "false"
    assert template["Conditions"]["HasWebsite"] == {"Fn::Equals": [{"Ref": "DeployWebsite"}, "true"]}
    for name in ("WebBucket", "WebBucketPolicy", "WebOriginAccessControl", "WebDistribution"):
        assert resources[name]["Condition"] == "HasWebsite", name
    block = resources["WebBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert all(block[k] is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                                          "RestrictPublicBuckets"))
    (read,) = [s for s in resources["WebBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
               if s["Effect"] == "Allow"]
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"} and read["Action"] == "s3:GetObject"
    assert "AWS:SourceArn" in read["Condition"]["StringEquals"]
    config = resources["WebDistribution"]["Properties"]["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["WebOriginAccessControl", "Id"]}
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert config["DefaultRootObject"] == "index.html"
    for key in ("WebBucketName", "WebDistributionId", "WebUrl"):
        assert template["Outputs"][key]["Condition"] == "HasWebsite"


# --- cold starts: the alias, SnapStart, provisioned concurrency -----------------------------


NO_VALUE = {"Ref": "AWS::NoValue"}
PSEUDO = {"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012",
          "AWS::StackName": "pose", "AWS::URLSuffix": "amazonaws.com"}


def parameter_values(template: dict, parameters: dict[str, str]) -> dict[str, str]:
    """Every parameter's value as CloudFormation passes it (a string): `parameters`, else the default."""
    return {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()} | parameters


def holds(expr, template: dict, params: dict[str, str]) -> bool:
    """A condition, or a rule's assertion, as CloudFormation decides it for these parameter values."""
    ((fn, args),) = expr.items()
    if fn == "Fn::Equals":
        a, b = (params[x["Ref"]] if isinstance(x, dict) else str(x) for x in args)
        return a == b
    if fn == "Fn::Not":
        return not holds(args[0], template, params)
    if fn in ("Fn::And", "Fn::Or"):
        return (all if fn == "Fn::And" else any)(holds(x, template, params) for x in args)
    if fn == "Condition":
        return holds(template["Conditions"][args], template, params)
    raise AssertionError(f"unexpected condition {expr}")


def evaluate(value, template: dict, parameters: dict[str, str], substitute: bool = False):
    """`value` with its Fn::If resolved as CloudFormation would for these parameter values (the
    template's defaults for the others); AWS::NoValue drops the key. With `substitute`, also each Ref
    to a parameter or pseudo parameter and each ${...} of a string Fn::Sub (other references stay)."""
    params = parameter_values(template, parameters)
    known = params | PSEUDO

    def walk(v):
        if isinstance(v, dict) and "Fn::If" in v:
            name, yes, no = v["Fn::If"]
            return walk(yes if holds(template["Conditions"][name], template, params) else no)
        if substitute and isinstance(v, dict) and v.get("Ref") in known:
            return known[v["Ref"]]
        if substitute and isinstance(v, dict) and isinstance(v.get("Fn::Sub"), str):
            return re.sub(r"\$\{([\w:]+)\}", lambda m: known.get(m[1], m[0]), v["Fn::Sub"])
        if isinstance(v, dict):
            return {k: x for k, x in ((k, walk(x)) for k, x in v.items()) if x != NO_VALUE}
        if isinstance(v, list):
            return [x for x in map(walk, v) if x != NO_VALUE]
        return v

    return walk(value)


def test_the_api_invokes_alias_live(translated):
    (alias,) = of_type(translated, "AWS::Lambda::Alias").values()
    assert alias["Properties"]["Name"] == "live"
    (version_id,) = of_type(translated, "AWS::Lambda::Version")
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    paths = translated["Resources"]["PoseApi"]["Properties"]["Body"]["paths"]
    for path, method in API_ROUTES:
        uri = paths[path][method]["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
        assert "${PoseFunctionAliaslive}" in uri, uri
    for permission in of_type(translated, "AWS::Lambda::Permission").values():
        assert permission["Properties"]["FunctionName"] == {"Ref": "PoseFunctionAliaslive"}


@pytest.mark.parametrize("snapstart", ["false", "true"])
def test_snapstart_applies_to_published_versions_when_asked(template, translated, snapstart):
    assert template["Parameters"]["SnapStart"]["Default"] == "false"
    fn = evaluate(translated["Resources"]["PoseFunction"]["Properties"], template, {"SnapStart": snapstart})
    if snapstart == "true":
        assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    else:
        assert "SnapStart" not in fn
    assert fn["Runtime"] == "python3.12"  # SnapStart for Python starts at 3.12


@pytest.mark.parametrize("count", ["0", "3"])
def test_provisioned_concurrency_is_on_the_alias_when_asked(template, translated, count):
    assert template["Parameters"]["ProvisionedConcurrency"]["Default"] == 0
    (alias,) = of_type(translated, "AWS::Lambda::Alias").values()
    props = evaluate(alias["Properties"], template, {"ProvisionedConcurrency": count})
    if count == "0":
        assert "ProvisionedConcurrencyConfig" not in props
    else:
        assert props["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": {"Ref": "ProvisionedConcurrency"}}


def refused_by(template: dict, parameters: dict[str, str]) -> list[str]:
    """The rules that would make CloudFormation refuse these parameter values."""
    params = parameter_values(template, parameters)
    return [name for name, rule in template["Rules"].items()
            if holds(rule["RuleCondition"], template, params)
            and not all(holds(a["Assert"], template, params) for a in rule["Assertions"])]


@pytest.mark.parametrize("snapstart, count, refused", [("true", "3", True), ("true", "0", False),
                                                        ("false", "3", False), ("false", "0", False)])
def test_snapstart_and_provisioned_concurrency_are_refused_together(template, snapstart, count, refused):
    got = refused_by(template, {"SnapStart": snapstart, "ProvisionedConcurrency": count})
    assert got == (["SnapStartOrProvisionedConcurrency"] if refused else [])


def _parameters_used(value, template: dict) -> set[str]:
    """Parameters a value refers to: Ref, ${...} in Fn::Sub, and those of the conditions of its Fn::If."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "Ref" and v in template["Parameters"]:
                found.add(v)
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                found |= {n for n in re.findall(r"\$\{([^}.!]+)\}", text) if n in template["Parameters"]}
                found |= _parameters_used(v, template) if not isinstance(v, str) else set()
            elif k == "Fn::If":
                found |= _parameters_used(template["Conditions"][v[0]], template) | _parameters_used(v[1:], template)
            elif k == "Condition" and isinstance(v, str):  # a condition made of others
                found |= _parameters_used(template["Conditions"][v], template)
            else:
                found |= _parameters_used(v, template)
    elif isinstance(value, list):
        for v in value:
            found |= _parameters_used(v, template)
    return found


def test_a_parameter_change_publishes_a_new_version(template, function, translated):
    """SAM names the version after the function's properties before parameters are resolved, so a
    changed parameter alone would leave alias live on the old version (the old model, no SnapStart).
    The version's description names every parameter the function uses: a change replaces the
    version, and CloudFormation publishes a new one."""
    props = {**template["Globals"]["Function"], **function["Properties"]}
    # Reserved concurrency is the function's, provisioned concurrency the alias's: neither is a version's.
    props = {k: v for k, v in props.items()
             if k not in ("Events", "VersionDescription", "ProvisionedConcurrencyConfig", "ReservedConcurrentExecutions")}
    used = _parameters_used(props, template)
    assert {"ModelName", "ModelS3Uri", "MemorySize", "SnapStart", "LogLevel", "DetectPeople"} <= used
    (version,) = of_type(translated, "AWS::Lambda::Version").values()
    described = set(re.findall(r"\$\{(\w+)\}", version["Properties"]["Description"]["Fn::Sub"]))
    assert used <= described, used - described


def test_the_version_description_fits_lambdas_256_characters(template, function):
    """Every parameter at its longest allowed value."""
    longest = {}
    for name, p in template["Parameters"].items():
        if "AllowedValues" in p:
            longest[name] = max(map(str, p["AllowedValues"]), key=len)
        elif p["Type"] == "Number":
            longest[name] = str(p.get("MaxValue", 10 ** 6))
        else:
            assert "MaxLength" in p or "AllowedPattern" in p, name
            longest[name] = "x" * p.get("MaxLength", 64)
    text = function["Properties"]["VersionDescription"]["Fn::Sub"]
    assert len(re.sub(r"\$\{(\w+)\}", lambda m: longest[m[1]], text)) <= 256


# --- concurrency and access logs ------------------------------------------------------------


@pytest.mark.parametrize("function, parameter", [("PoseFunction", "ApiReservedConcurrency"),
                                                 ("BatchFunction", "BatchReservedConcurrency")])
@pytest.mark.parametrize("count", ["0", "50"])
def test_each_function_may_reserve_its_concurrency(template, translated, function, parameter, count):
    """Reserved, the API keeps its share whatever the batch does, and the batch cannot take more than
    its own; 0 reserves nothing (Lambda's 0 would throttle every call)."""
    p = template["Parameters"][parameter]
    assert p["Type"] == "Number" and p["Default"] == 0 and p["MinValue"] == 0
    assert parameter in template["Description"]
    props = evaluate(translated["Resources"][function]["Properties"], template, {parameter: count}, substitute=True)
    if count == "0":
        assert "ReservedConcurrentExecutions" not in props
    else:
        assert props["ReservedConcurrentExecutions"] == count


ACCESS_LOG_FIELDS = {"requestId", "ip", "requestTime", "method", "path", "status", "latencyMs", "error"}


@pytest.mark.parametrize("days", ["0", "30"])
def test_the_stage_writes_an_access_log_when_asked(template, translated, days):
    p = template["Parameters"]["ApiAccessLogRetentionDays"]
    assert p["Default"] == 0 and set(p["AllowedValues"]) - {0} == set(template["Parameters"]["LogRetentionDays"]["AllowedValues"])
    (stage,) = of_type(translated, "AWS::ApiGateway::Stage").values()
    props = evaluate(stage["Properties"], template, {"ApiAccessLogRetentionDays": days})
    group = translated["Resources"]["PoseApiAccessLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup" and group["DeletionPolicy"] == "Delete"
    assert holds({"Condition": group["Condition"]}, template, parameter_values(template, {"ApiAccessLogRetentionDays": days})) is (days != "0")
    if days == "0":
        assert "AccessLogSetting" not in props
        return
    assert group["Properties"]["RetentionInDays"] == {"Ref": "ApiAccessLogRetentionDays"}
    setting = props["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["PoseApiAccessLogGroup", "Arn"]}
    # API Gateway fills in the values unescaped: each line is JSON only if no value can hold a quote.
    # messageString is the error message in quotes; the other values are ids, numbers, IPs and routes.
    variables = set(re.findall(r"\$context\.[\w.]+", setting["Format"]))
    assert variables <= {"$context.requestId", "$context.identity.sourceIp", "$context.requestTime",
                         "$context.httpMethod", "$context.resourcePath", "$context.status",
                         "$context.responseLength", "$context.responseLatency", "$context.integrationLatency",
                         "$context.integration.status", "$context.identity.apiKeyId",
                         "$context.error.responseType", "$context.error.messageString"}, variables
    line = setting["Format"].replace("$context.error.messageString", '"Too Many Requests"')
    line = re.sub(r"\$context\.[\w.]+", "-", line)
    assert ACCESS_LOG_FIELDS <= set(json.loads(line))
