"""Start the batch state machine of a deployed stack on an S3 prefix, and follow it to its end.

    python -m local.batch_s3 s3://bucket/photos/ s3://bucket/out/ --stack STACK [--images] [--threshold X]
                             [--max-people N] [--no-wait]

Reads the stack's outputs (BatchStateMachineArn, BatchInputUri, BatchOutputUri: the stack was deployed
with BatchInputBucket and BatchOutputBucket), refuses an input or output the stack's roles cannot reach,
starts an execution with boto3, prints its console link, then a progress line from the map run's item
counts (every object listed is an item; keys that are not photos are skipped) until the execution ends,
and the gather's summary. Credentials and region: the usual AWS SDK settings (AWS_PROFILE, AWS_REGION ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from urllib.parse import quote

import boto3
from tqdm import tqdm

from pose.errors import BadParameter
from pose.options import Options
from pose.records import job_options

DONE_ITEMS = ("succeeded", "failed", "timedOut", "aborted")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/prefix -> (bucket, prefix ending in / or empty); ValueError when it is not one."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not an s3://bucket/prefix/ URI")
    bucket, _, prefix = uri[5:].partition("/")
    if any(c in prefix for c in "*?$"):
        raise ValueError(f"{uri!r}: a prefix has no wildcards")
    return bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/"


def within(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    return inner[0] == outer[0] and inner[1].startswith(outer[1])


def stack_outputs(cloudformation, stack: str) -> dict[str, str]:
    (found,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}


def execution_input(source: tuple[str, str], target: tuple[str, str], options: Options) -> dict:
    """The state machine's input (statemachine/batch.asl.json); checked as the batch function will check it."""
    job = {"input": {"bucket": source[0], "prefix": source[1]}, "output": {"bucket": target[0], "prefix": target[1]},
           "return_image": options.return_image, "max_people": options.max_people}
    if options.threshold is not None:
        job["threshold"] = options.threshold
    job_options(job)
    return job


def console_link(execution_arn: str) -> str:
    region = execution_arn.split(":")[3]
    return (f"https://{region}.console.aws.amazon.com/states/home?region={region}"
            f"#/v2/executions/details/{quote(execution_arn, safe='')}")


def follow(sfn, execution_arn: str, poll_s: float = 5.0) -> dict:
    """Wait for the execution to end with a progress bar of its map run's items; its last description."""
    with tqdm(unit="item", dynamic_ncols=True, desc="photos", disable=None) as bar:
        while True:
            execution = sfn.describe_execution(executionArn=execution_arn)
            runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
            if runs:
                counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts", {})
                bar.total = counts.get("total") or None
                bar.n = sum(counts.get(k, 0) for k in DONE_ITEMS)
                bar.set_postfix(running=counts.get("running", 0), failed=counts.get("failed", 0)
                                + counts.get("timedOut", 0), refresh=False)
            else:
                bar.set_postfix_str("listing the input" if execution["status"] == "RUNNING" else "", refresh=False)
            bar.refresh()
            if execution["status"] != "RUNNING":
                return execution
            time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[3:]))
    parser.add_argument("input", help="s3://bucket/prefix/ of the photos")
    parser.add_argument("output", help="s3://bucket/prefix/ for the results")
    parser.add_argument("--stack", required=True, help="the deployed stack's name")
    parser.add_argument("--images", action="store_true", help="also write the annotated photos")
    parser.add_argument("--threshold", type=float, help="a joint is visible at this score (default: the model's)")
    parser.add_argument("--max-people", type=int, default=Options.max_people)
    parser.add_argument("--name", help="the execution's name (default: batch-<time>-<random>)")
    parser.add_argument("--no-wait", action="store_true", help="start it and return")
    parser.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        source, target = parse_s3_uri(args.input), parse_s3_uri(args.output)
        job = execution_input(source, target, Options(args.threshold, args.max_people, args.images))
    except ValueError as exc:
        parser.error(str(exc))
    except BadParameter as exc:
        parser.error(exc.message)
    outputs = stack_outputs(boto3.client("cloudformation"), args.stack)
    if "BatchStateMachineArn" not in outputs:
        parser.error(f"stack {args.stack} has no batch state machine: deploy it with BatchInputBucket and "
                     "BatchOutputBucket set")
    allowed_in, allowed_out = parse_s3_uri(outputs["BatchInputUri"]), parse_s3_uri(outputs["BatchOutputUri"])
    if not within(source, allowed_in):
        parser.error(f"the stack may read only under {outputs['BatchInputUri']} (its BatchInputBucket and "
                     f"BatchInputPrefix), not {args.input}")
    if not within(target, allowed_out):
        parser.error(f"the stack may write only under {outputs['BatchOutputUri']}, not {args.output}")
    sfn = boto3.client("stepfunctions")
    name = args.name or f"batch-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    started = sfn.start_execution(stateMachineArn=outputs["BatchStateMachineArn"], name=name, input=json.dumps(job))
    arn = started["executionArn"]
    print(f"started {arn}\n  {console_link(arn)}", flush=True)
    if args.no_wait:
        return 0
    ended = follow(sfn, arn, args.poll)
    print(f"execution {ended['status']}")
    if ended["status"] != "SUCCEEDED":
        for key in ("error", "cause"):
            if ended.get(key):
                print(f"  {key}: {ended[key]}")
        return 1
    summary = json.loads(ended.get("output") or "{}").get("gathered", {}).get("summary", {})
    print(f"{summary.get('photos')} photos, {summary.get('people')} people, {summary.get('errors')} errors; "
          f"{summary.get('results')}, {summary.get('coco_results')}, {summary.get('images')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
