# crosslocate: every target is a thin call to the `crosslocate` CLI inside .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CL := $(VENV)/bin/crosslocate
STAMP := $(VENV)/.setup-stamp
REGION ?= demo
PRESET ?= cpu
WORK ?= work
SRTM ?= ../shared/data/srtm3
# The embedded DEM covers only REGION=demo. Other regions read real tiles: DEM defaults to the SRTM
# folder when it exists, and the uniform build is clipped to the part those tiles cover (CLIP=1,
# logged with the covered fraction); CLIP= demands full coverage and names what is missing.
DEM ?= $(if $(filter demo,$(REGION)),,$(wildcard $(SRTM)))
CLIP ?= $(if $(filter demo,$(REGION)),,1)
DEM_ARG := $(if $(DEM),--dem $(DEM),)
CLIP_ARG := $(if $(CLIP),--clip-to-dem,)
# Network choices on top of the preset for train/benchmark, e.g.
# NET_ARGS="--backbone efficientnet_lite0 --imagenet-weights builtin" or NET_ARGS="--imagenet-weights vgg16.pth"
NET_ARGS ?=

.PHONY: setup test test-all probe lint demo render-sparse render-uniform render-compact train benchmark \
        bench-render bench-terrain bench-build bench-search bench-localize clean

setup: $(STAMP)

# Idempotent: re-runs only when the dependency files change. pyrender pins PyOpenGL 3.1.0, which
# breaks offscreen rendering, so it is installed without its dependencies (extra `render` has them).
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[render,tests]'
	$(PY) -m pip install -q --no-deps -c constraints.txt pyrender==0.1.45
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

# Issue 15's "nothing silently wrong" cases (full disk, flipped bits, bad photos, impossible cameras, ...).
probe: setup
	$(PY) -m pytest -v tests/pipelines/test_probe.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# End to end on the embedded demo region: render what is missing, train (cpu preset), evaluate.
demo: benchmark

render-sparse: setup
	$(CL) build sparse --region $(REGION) $(DEM_ARG) --preset $(PRESET) --work $(WORK) $(ARGS)

render-uniform: setup
	$(CL) build uniform --region $(REGION) $(DEM_ARG) $(CLIP_ARG) --preset $(PRESET) --work $(WORK) $(ARGS)

render-compact: setup
	$(CL) build compact --region $(REGION) $(DEM_ARG) --preset $(PRESET) --work $(WORK) $(ARGS)

train: setup
	$(CL) train --region $(REGION) $(DEM_ARG) $(CLIP_ARG) --preset $(PRESET) --work $(WORK) $(NET_ARGS)

benchmark: setup
	$(CL) benchmark --region $(REGION) $(DEM_ARG) $(CLIP_ARG) --preset $(PRESET) --work $(WORK) $(NET_ARGS)

# render-only backends, then the atlas vs the per-position pyramid (accuracy, cost per position)
bench-render: setup
	$(CL) bench render --srtm $(SRTM) --out bench/render.json
	$(CL) bench terrain --srtm $(SRTM) --out bench/terrain.json

bench-terrain: setup
	$(CL) bench terrain --srtm $(SRTM) --out bench/terrain.json

bench-build: setup
	$(CL) bench build --dem $(SRTM) --out bench/build.json $(ARGS)

bench-search: setup
	$(CL) bench search --out bench/search.json

# a first and a second photo localized against the uniform database (built first if missing), each as
# its own `crosslocate localize` process; the second call's wall time against the 5 s aim
bench-localize: setup
	$(CL) bench localize --region $(REGION) $(DEM_ARG) $(CLIP_ARG) --preset $(PRESET) --work $(WORK) --out bench/localize.json

clean:
	rm -rf $(WORK) bench/*.json
