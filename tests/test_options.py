"""One check of what a caller may ask (pose/options.py), for POST /pose and the batch jobs alike."""

from __future__ import annotations

import base64
import inspect

import pytest

from local.apigw import json_event
from pose import options, pipeline, records
from pose.errors import BadParameter
from pose.options import Options

WRONG = [("threshold", 1.5), ("threshold", "high"), ("threshold", True), ("threshold", -0.1),
         ("max_people", 0), ("max_people", pipeline.MAX_PEOPLE + 1), ("max_people", 2.5), ("max_people", "many"),
         ("return_image", "yes"), ("return_image", 3)]


@pytest.mark.parametrize("name, value", WRONG)
def test_the_api_and_a_batch_job_refuse_a_wrong_value_with_the_same_message(call, pose_jpg, name, value):
    with pytest.raises(BadParameter) as refused:
        records.job_options({"input": {}, "output": {}, name: value})
    status, body, _ = call(json_event("/pose", {"image": base64.b64encode(pose_jpg).decode(), name: value}))
    assert status == 422 and body["error"] == {"code": "bad_parameter", "message": refused.value.message}
    assert refused.value.message.startswith(f"'{name}' must be")


def test_values_written_as_text_are_read_as_the_query_string_sends_them():
    assert options.parse({"threshold": "0.25", "max_people": "3", "return_image": "false", "image_format": "WEBP"}) \
        == Options(threshold=0.25, max_people=3, return_image=False, image_format="webp")


def test_absent_or_null_is_the_default_and_only_return_image_defaults_differ():
    api, job = options.parse({}, return_image=True), records.job_options({"max_people": None, "threshold": None})
    assert api == Options(return_image=True) and job == Options()
    assert (job.threshold, job.max_people, job.image_format) == (None, pipeline.MAX_PEOPLE, "png")


def test_a_batch_job_draws_png_whatever_image_format_it_names():
    assert records.job_options({"image_format": "webp", "return_image": True}).image_format == "png"


def test_the_cap_of_people_is_one_constant():
    """max_people's default and its cap, and the pipeline's default, are pipeline.MAX_PEOPLE."""
    assert options.parse({"max_people": pipeline.MAX_PEOPLE}).max_people == pipeline.MAX_PEOPLE == Options().max_people
    with pytest.raises(BadParameter, match=rf"\[1, {pipeline.MAX_PEOPLE}\]"):
        options.parse({"max_people": pipeline.MAX_PEOPLE + 1})
    assert inspect.signature(pipeline.estimate_people).parameters["max_people"].default == pipeline.MAX_PEOPLE


def test_minus_zero_is_zero():
    assert str(options.parse({"threshold": -0.0}).threshold) == "0.0"
