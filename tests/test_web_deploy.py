"""web/deploy.py (make deploy-web) against moto's in-process AWS: stack outputs in, page files out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
API_URL = "https://abc123defg.execute-api.us-east-1.amazonaws.com/Prod/"
API_ORIGIN = "https://abc123defg.execute-api.us-east-1.amazonaws.com"
PAGE_FILES = {"index.html", "style.css", "app.js", "api.js", "draw.js", "photo.js", "camera.js", "clip.js", "tracks.js", "icon.svg", "config.json"}


def load_deploy():
    spec = importlib.util.spec_from_file_location("web_deploy", WEB / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


deploy = load_deploy()


@pytest.fixture()
def aws(monkeypatch):
    """A boto3 session on moto (no network, no real credentials)."""
    import boto3
    from moto import mock_aws

    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def make_stack(session, name: str, website: bool, api_key_id: str = "") -> dict:
    """A stand-in for the project's stack: the outputs deploy.py reads."""
    outputs = {"ApiUrl": {"Value": API_URL}}
    if api_key_id:
        outputs["ApiKeyId"] = {"Value": api_key_id}
    resources = {"Placeholder": {"Type": "AWS::SNS::Topic"}}
    distribution_id = None
    if website:
        cloudfront = session.client("cloudfront")
        distribution_id = cloudfront.create_distribution(DistributionConfig={
            "CallerReference": "test", "Comment": "", "Enabled": True,
            "Origins": {"Quantity": 1, "Items": [{"Id": "web", "DomainName": "web.s3.amazonaws.com",
                                                  "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
            "DefaultCacheBehavior": {"TargetOriginId": "web", "ViewerProtocolPolicy": "redirect-to-https",
                                     "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6"},
        })["Distribution"]["Id"]
        resources = {"WebBucket": {"Type": "AWS::S3::Bucket"}}
        outputs.update({
            "WebBucketName": {"Value": {"Ref": "WebBucket"}},
            "WebDistributionId": {"Value": distribution_id},
            "WebUrl": {"Value": "https://d111111abcdef8.cloudfront.net/"},
        })
    session.client("cloudformation").create_stack(
        StackName=name, TemplateBody=json.dumps({"Resources": resources, "Outputs": outputs}))
    described = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    found = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    return {"bucket": found.get("WebBucketName"), "distribution": distribution_id}


def test_publishes_the_page_pointed_at_the_api(aws, capsys):
    stack = make_stack(aws, "pose", website=True)
    assert deploy.main(["pose"], session=aws) == 0
    s3 = aws.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=stack["bucket"])["Contents"]}
    assert keys == PAGE_FILES  # deploy.py itself is not published

    def get(key):
        return s3.get_object(Bucket=stack["bucket"], Key=key)

    expected_types = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
                      ".json": "application/json", ".svg": "image/svg+xml"}
    for key in keys:
        obj = get(key)
        assert obj["ContentType"].split(";")[0] == expected_types[Path(key).suffix], key
        assert obj["CacheControl"] == "no-cache"
    assert json.loads(get("config.json")["Body"].read()) == {"apiBaseUrl": API_URL}
    html = get("index.html")["Body"].read().decode()
    csp = deploy.CSP_META.search(html).group(2)
    assert f"connect-src 'self' {API_ORIGIN}" in csp
    assert get("app.js")["Body"].read() == (WEB / "app.js").read_bytes()
    invalidations = aws.client("cloudfront").list_invalidations(DistributionId=stack["distribution"])
    assert invalidations["InvalidationList"]["Quantity"] == 1
    assert "https://d111111abcdef8.cloudfront.net/" in capsys.readouterr().out


def test_the_page_carries_the_key_of_an_api_that_requires_one(aws, capsys):
    """RequireApiKey=true: the stack outputs the key's id; config.json gets its value."""
    key = aws.client("apigateway").create_api_key(name="pose-key", enabled=True)
    stack = make_stack(aws, "keyed", website=True, api_key_id=key["id"])
    assert deploy.main(["keyed"], session=aws) == 0
    config = json.loads(aws.client("s3").get_object(Bucket=stack["bucket"], Key="config.json")["Body"].read())
    assert config == {"apiBaseUrl": API_URL, "apiKey": key["value"]} and len(key["value"]) >= 20
    assert "requires a key" in capsys.readouterr().out


def test_a_stack_without_the_website_is_refused_clearly(aws, capsys):
    make_stack(aws, "api-only", website=False)
    assert deploy.main(["api-only"], session=aws) == 1
    assert "DeployWebsite=true" in capsys.readouterr().err


def test_an_unknown_stack_is_refused_clearly(aws, capsys):
    assert deploy.main(["nope"], session=aws) == 1
    assert "cannot read stack 'nope'" in capsys.readouterr().err


def test_empty_the_bucket(aws):
    stack = make_stack(aws, "pose", website=True)
    assert deploy.main(["pose"], session=aws) == 0
    assert deploy.main(["pose", "--empty"], session=aws) == 0
    assert aws.client("s3").list_objects_v2(Bucket=stack["bucket"]).get("KeyCount") == 0


def test_out_dir_for_hosting_elsewhere(tmp_path):
    assert deploy.main(["unused", "--api-url", API_URL, "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == PAGE_FILES
    assert json.loads((tmp_path / "config.json").read_text())["apiBaseUrl"] == API_URL


def test_connect_src_rewrite():
    html = (WEB / "index.html").read_text()
    once = deploy.with_connect_src(html, API_ORIGIN)
    assert deploy.with_connect_src(once, API_ORIGIN) == once  # idempotent
    assert once.replace(f" {API_ORIGIN}", "", 1) == html  # nothing else changes
    bare = '<meta http-equiv="Content-Security-Policy" content="default-src \'self\'">'
    assert "connect-src 'self' https://x.example" in deploy.with_connect_src(bare, "https://x.example")
    for bad in ('https://x.example" onload="x', "javascript:alert(1)", "https://x.example/path"):
        with pytest.raises(deploy.DeployError):
            deploy.with_connect_src(html, bad)
    assert deploy.api_origin(API_URL) == API_ORIGIN


def test_committed_config_is_same_origin():
    assert json.loads((WEB / "config.json").read_text()) == {"apiBaseUrl": ""}


def test_page_has_no_inline_script_or_style():
    """What makes the restrictive CSP possible (checked in a browser by tests/test_web.py too)."""
    html = (WEB / "index.html").read_text()
    meta = deploy.CSP_META.search(html)
    assert meta, "index.html needs a Content-Security-Policy meta tag"
    csp = meta.group(2)
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "<script>" not in html and " style=" not in html and " onclick=" not in html.lower()
