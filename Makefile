# The verbs of the project. A newcomer needs two: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 3000
# The default pose model of models/models.json (local/catalog.py needs only the standard library).
MODEL ?= $(shell $(PYTHON) local/catalog.py default pose)
STACK ?= pose-estimation
SB_ARCH ?= resnet50
SB_DATASET ?= mpii
SB_CKPT ?=
SB_NAME := simple-baselines-$(SB_ARCH)-$(SB_DATASET)
EVENT ?= events/pose-json.json
export SAM_CLI_TELEMETRY := 0

.PHONY: help venv demo test test-fast serve invoke events layers validate sam-build deploy-web model export report bench batch batch-s3 bench-batch limits video clean

help:
	@echo "make demo     set up (the function's packages only), run it on a bundled photo (out/annotated.png; MODEL=$(MODEL))"
	@echo "make test     run every test"
	@echo "make test-fast the inner loop: the unit tests (not model, tools, aws, browser, load, eval)"
	@echo "make serve    local API + web page on http://127.0.0.1:$(PORT)/ (PORT=..., API_KEY=... to require a key, MODEL=...)"
	@echo "make invoke   run the function on one event (EVENT=events/....json)"
	@echo "make layers   build the dependency and model layers and check the 250 MB limit"
	@echo "make events   regenerate the sample events in events/"
	@echo "make report   every model x variant measured side by side -> docs/report.md, docs/people.md (QUICK=1)"
	@echo "make bench    Simple Baselines variants, the handler end to end, people, batch of P crops vs P runs, the cold start"
	@echo "make batch    every photo in a folder: IN=folder OUT=folder (WORKERS=, THREADS=, IMAGES=1); resumable"
	@echo "make video    every person in a clip tracked: IN=clip.mp4 (or a folder of clips) OUT=folder -> tracks.json, annotated.mp4"
	@echo "make batch-s3 every photo under an S3 prefix on the stack's state machine: IN=s3://... OUT=s3://... STACK=..."
	@echo "make bench-batch photos per second of the batch code at 1 and 2 vCPUs (1769 and 3538 MB)"
	@echo "make limits   the worst inputs the function accepts and hostile ones, each timed and measured (peak memory; BATCH=1: the batch's)"
	@echo "make model    rebuild models/int8/*.int8.onnx from models/*.onnx (ONLY=name, CHECK=1)"
	@echo "make export   Simple Baselines -> ONNX -> INT8 in out/models (SB_CKPT=checkpoint, SB_ARCH, SB_DATASET)"
	@echo "make validate sam validate (lint and full)"
	@echo "make sam-build sam build (no Docker needed), then: sam deploy --guided"
	@echo "make deploy-web publish web/ to the stack's site (STACK=...; deployed with DeployWebsite=true)"

# Two stamps: .run-installed for what the function and the local server need (make demo, serve,
# invoke), .installed for the rest (tests, build tools, sam), added on top; make demo then make
# test installs each part once. The project itself is installed editable (pyproject.toml): handler/ on
# the venv's path, as on Lambda; build/ and local/ run from here as modules (python -m build.quantize).
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: requirements-run.txt handler/requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -r requirements-run.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed: $(VENV)/.run-installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# The function runs in process on the venv's packages (the dependency layer's pinned versions);
# `make layers` builds the Lambda layers themselves and checks their size.
demo: $(VENV)/.run-installed
	@$(MAKE) --no-print-directory -s -C layers/model build-ModelLayer ARTIFACTS_DIR=$(CURDIR)/layers/model/build
	MODEL_PATH=$(CURDIR)/layers/model/build/model/$(MODEL).onnx $(PY) -m local.invoke events/pose-json.json --out out
	@echo "demo done: see out/annotated.png and out/pose.json"

test: $(VENV)/.installed
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

# The inner loop: the unit group (pyproject.toml's markers; about a minute); `make test` runs every group.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m unit tests

serve: $(VENV)/.run-installed
	MODEL=$(MODEL) $(PY) -m local.serve --port $(PORT)

# With a Docker engine this is `sam local invoke`; without one, the same handler in process.
invoke: $(VENV)/.run-installed
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) sam-build && $(VENV)/bin/sam local invoke PoseFunction -e $(EVENT) --parameter-overrides ModelName=$(MODEL); \
	else \
		MODEL=$(MODEL) $(PY) -m local.invoke $(EVENT) --out out; \
	fi

events: $(VENV)/.run-installed
	$(PY) -m events.make_events

layers: $(VENV)/.run-installed
	$(PY) layers/build_layers.py $(if $(MODEL_DIR),--model-dir $(MODEL_DIR)) $(if $(PYC_PYTHON),--pyc-python $(PYC_PYTHON))

validate: $(VENV)/.installed
	$(VENV)/bin/sam validate --lint
	$(VENV)/bin/sam validate --region us-east-1

sam-build: $(VENV)/.installed
	PIP_PYTHON=$(CURDIR)/$(PY) $(VENV)/bin/sam build

deploy-web: $(VENV)/.installed
	$(PY) web/deploy.py $(STACK)

# Rebuild the served INT8 models from the FP32 sources (calibration needs ../shared; ONLY=name, CHECK=1).
model: $(VENV)/.installed
	$(PY) -m build.make_models $(if $(ONLY),--only $(ONLY)) $(if $(CHECK),--check)

# Simple Baselines from an official checkpoint (SB_CKPT=...pth.tar) or, without one, generated weights.
export: $(VENV)/.installed
	$(PY) -m build.export $(if $(SB_CKPT),--checkpoint $(SB_CKPT),--random-init) --arch $(SB_ARCH) --dataset $(SB_DATASET) --out out/models/$(SB_NAME).onnx
	$(PY) -m build.quantize out/models/$(SB_NAME).onnx out/models/$(SB_NAME).int8.onnx

# Every model x variant: size, latency, cold start, memory, accuracy -> docs/report.md (QUICK=1: smoke test).
report: $(VENV)/.installed
	$(PY) -m build.report $(if $(QUICK),--quick)
	$(PY) -m build.report_people $(if $(QUICK),--quick)

# Simple Baselines variants side by side, the handler end to end per served model, and the batch: P crops in one
# run vs P runs, and the served files at batch 1 against their fixed-batch versions in git history; the cold
# start without bytecode (as the layer ships) next to the floor.
bench: $(VENV)/.installed
	$(PY) -m build.bench_models --json out/bench/simple-baselines.json
	$(PY) -m build.bench_handler --json out/bench/handler.json
	$(PY) -m build.bench_people --json out/bench/people.json
	$(PY) -m build.bench_batch_dim --json out/bench/batch-dim.json
	$(PY) -m build.coldstart --json out/bench/coldstart.json

# Every photo under IN (a folder) -> OUT/results.jsonl, coco_results.json, images.json (local/batch.py).
batch: $(VENV)/.installed
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make batch IN=<folder> OUT=<folder>" >&2; exit 2; }
	$(PY) -m local.batch "$(IN)" "$(OUT)" $(if $(WORKERS),--workers $(WORKERS)) $(if $(THREADS),--threads $(THREADS)) $(if $(IMAGES),--images)

# A clip (or every clip in a folder) -> OUT/tracks.json, OUT/annotated.mp4 and a summary (local/video.py).
video: $(VENV)/.installed
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make video IN=<clip or folder> OUT=<folder>" >&2; exit 2; }
	$(PY) -m local.video "$(IN)" "$(OUT)"

# The deployed stack's batch state machine over s3://.../ (local/batch_s3.py): starts it, follows it.
batch-s3: $(VENV)/.installed
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make batch-s3 IN=s3://bucket/prefix/ OUT=s3://bucket/out/ STACK=<stack>" >&2; exit 2; }
	$(PY) -m local.batch_s3 "$(IN)" "$(OUT)" --stack $(STACK) $(if $(IMAGES),--images)

# Photos per second of the batch code pinned to 1 and 2 cores (build/bench_batch.py; PHOTOS=, ROUNDS=).
bench-batch: $(VENV)/.installed
	$(PY) -m build.bench_batch $(if $(PHOTOS),--photos $(PHOTOS)) $(if $(ROUNDS),--rounds $(ROUNDS))

# The worst legal inputs and hostile ones, each in a fresh process at 1 thread: time and peak RSS (ONLY="case").
limits: $(VENV)/.installed
	$(PY) -m build.limits $(if $(ONLY),--only "$(ONLY)") $(if $(BATCH),--batch)

clean:
	rm -rf out layers/*/build .aws-sam
