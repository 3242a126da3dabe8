"""Publish the web page to the stack's web bucket, pointed at the stack's API.

    python web/deploy.py STACK [--region REGION]    # upload (the stack needs DeployWebsite=true)
    python web/deploy.py STACK --out DIR             # write the site to DIR instead, to host elsewhere
    python web/deploy.py STACK --empty               # empty the web bucket (before deleting the stack)

Reads the stack's outputs (ApiUrl, WebBucketName, WebDistributionId, WebUrl, ApiKeyId), writes
config.json with the API URL (and, when the stack requires an API key, the key: a page's key is
public, so the usage plan meters and limits it but it keeps nobody out), adds the API's origin to
the page's Content-Security-Policy (connect-src), and uploads the page's files with their content
types. The files are small, so each is served with `Cache-Control: no-cache` (browsers revalidate;
CloudFront keeps them only for its minimum TTL), and the distribution's cache is invalidated too,
so that a new version shows at once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

WEB = Path(__file__).resolve().parent

# The page's files are every file here with one of these suffixes (deploy.py itself is not).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
}
CACHE_CONTROL = "no-cache"
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
CSP_META = re.compile(r'(<meta\s+http-equiv="Content-Security-Policy"\s+content=")([^"]*)(")', re.IGNORECASE)


class DeployError(Exception):
    """A reason to stop, worded for the person running `make deploy-web`."""


def api_origin(api_url: str) -> str:
    parts = urlsplit(api_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.scheme not in ("http", "https") or not ORIGIN.fullmatch(origin):
        raise DeployError(f"the API URL {api_url!r} is not an http(s) URL")
    return origin


def with_connect_src(html: str, origin: str) -> str:
    """The page with `origin` added to its CSP meta tag's connect-src (once)."""
    if not ORIGIN.fullmatch(origin):
        raise DeployError(f"{origin!r} is not an origin (scheme://host[:port])")
    meta = CSP_META.search(html)
    if not meta:
        raise DeployError("index.html has no Content-Security-Policy meta tag")
    directives = [d.strip() for d in meta.group(2).split(";") if d.strip()]
    for i, directive in enumerate(directives):
        name, *sources = directive.split()
        if name == "connect-src":
            if origin not in sources:
                directives[i] = " ".join([name, *sources, origin])
            break
    else:
        directives.append(f"connect-src 'self' {origin}")
    return html[: meta.start(2)] + "; ".join(directives) + html[meta.end(2):]


def page_config(api_url: str, api_key: str = "") -> str:
    """config.json: where the page finds the API, and the key it sends (when the API needs one)."""
    config = {"apiBaseUrl": api_url}
    if api_key:
        config["apiKey"] = api_key
    return json.dumps(config, indent=2) + "\n"


def api_key_value(apigateway, key_id: str) -> str:
    """The value of the stack's API key (API Gateway generated it; only its id is an output)."""
    return apigateway.get_api_key(apiKey=key_id, includeValue=True)["value"]


def site_files(api_url: str, api_key: str = "") -> dict[str, tuple[bytes, str]]:
    """Key -> (body, content type) of every file to publish, config.json and index.html rewritten."""
    files = {}
    for path in sorted(WEB.rglob("*")):
        rel = path.relative_to(WEB)
        if not path.is_file() or path.suffix not in CONTENT_TYPES or any(p.startswith((".", "__")) for p in rel.parts):
            continue
        files[rel.as_posix()] = (path.read_bytes(), CONTENT_TYPES[path.suffix])
    if "index.html" not in files:
        raise DeployError(f"{WEB / 'index.html'} is missing")
    html = files["index.html"][0].decode("utf-8")
    files["index.html"] = (with_connect_src(html, api_origin(api_url)).encode("utf-8"), CONTENT_TYPES[".html"])
    files["config.json"] = (page_config(api_url, api_key).encode("utf-8"), CONTENT_TYPES[".json"])
    return files


def stack_outputs(cloudformation, stack: str) -> dict[str, str]:
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        raise DeployError(f"cannot read stack {stack!r}: {exc.response['Error'].get('Message', exc)}") from None
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def upload(s3, bucket: str, files: dict[str, tuple[bytes, str]]) -> None:
    for key, (body, content_type) in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, CacheControl=CACHE_CONTROL)
        print(f"  s3://{bucket}/{key}  ({content_type}, {len(body)} bytes)")


def empty(s3, bucket: str) -> int:
    removed = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            removed += len(keys)
    return removed


def invalidate(cloudfront, distribution_id: str) -> str:
    reply = cloudfront.create_invalidation(
        DistributionId=distribution_id,
        InvalidationBatch={"Paths": {"Quantity": 1, "Items": ["/*"]}, "CallerReference": f"deploy-web-{time.time_ns()}"},
    )
    return reply["Invalidation"]["Id"]


def main(argv: list[str] | None = None, session=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="name of the deployed stack (sam deploy --stack-name)")
    parser.add_argument("--region", help="AWS region of the stack (default: the AWS configuration's)")
    parser.add_argument("--api-url", help="use this API base URL instead of the stack's ApiUrl output")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--out", type=Path, help="write the site to this directory instead of uploading it")
    action.add_argument("--empty", action="store_true", help="delete every object in the web bucket")
    args = parser.parse_args(argv)

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = session or boto3.session.Session(region_name=args.region)
        outputs = {} if args.api_url and args.out else stack_outputs(session.client("cloudformation"), args.stack)
        bucket = outputs.get("WebBucketName")
        if args.empty:
            if not bucket:
                raise DeployError(f"stack {args.stack!r} has no web bucket (it was deployed without DeployWebsite=true)")
            print(f"emptied s3://{bucket}: {empty(session.client('s3'), bucket)} objects")
            return 0
        api_url = args.api_url or outputs.get("ApiUrl")
        if not api_url:
            raise DeployError(f"stack {args.stack!r} has no ApiUrl output; is it this project's stack?")
        api_key = api_key_value(session.client("apigateway"), outputs["ApiKeyId"]) if outputs.get("ApiKeyId") else ""
        if api_key:
            print("the API requires a key: config.json carries it (a page's key is public; the usage plan limits it)")
        files = site_files(api_url, api_key)
        if args.out:
            for key, (body, _) in files.items():
                (args.out / key).parent.mkdir(parents=True, exist_ok=True)
                (args.out / key).write_bytes(body)
            print(f"wrote {len(files)} files to {args.out} (API: {api_url})")
            return 0
        if not bucket:
            raise DeployError(f"stack {args.stack!r} has no WebBucketName output: deploy it with "
                              "--parameter-overrides DeployWebsite=true, or use --out DIR to host the page elsewhere")
        print(f"publishing the page (API: {api_url})")
        upload(session.client("s3"), bucket, files)
        if outputs.get("WebDistributionId"):
            invalidation = invalidate(session.client("cloudfront"), outputs["WebDistributionId"])
            print(f"CloudFront cache invalidation {invalidation} started (takes a minute or two)")
        print(f"the page: {outputs.get('WebUrl') or f's3://{bucket}/index.html'}")
        return 0
    except (DeployError, BotoCoreError, ClientError) as exc:
        print(f"deploy-web: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
