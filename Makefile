# The two commands a newcomer needs: `make test` and `make demo`. Each creates .venv with
# Python 3.11 when it is missing and installs the pinned dependencies; the stamp file makes a
# second run install nothing unless a requirements file or setup.py changed.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip --disable-pip-version-check --quiet
# Arguments for pytest, e.g. `make test PYTEST_ARGS="-k metrics"`.
PYTEST_ARGS ?=
# `make demo`: synthetic LostAndFound-style sequence + shipped default model -> bag -> pebal_node ->
# recorded bag -> scores, overlays and a GIF under $(DEMO_OUT). `make demo DATA=/path/to/LostAndFound`
# runs the same chain on the real dataset; DEMO_ARGS adds pebal_demo options (e.g. --frames 100
# --input-size 512x1024 --model ckpt.safetensors), SYNTH_ARGS options of `pebal synth`.
DATA      ?=
DEMO_OUT  ?= demo_out
DEMO_ARGS ?=
SYNTH_ARGS ?=

.PHONY: venv test demo default-model real-model lint bench clean

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt setup.py setup.cfg
	$(PIP) install -r requirements-dev.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
ifeq ($(strip $(DATA)),)
	rm -rf $(DEMO_OUT)/synth
	$(VENV)/bin/pebal synth --out $(DEMO_OUT)/synth --seed 0 --parts lostandfound --quiet $(SYNTH_ARGS)
	$(VENV)/bin/pebal_demo --data $(DEMO_OUT)/synth/lostandfound --out $(DEMO_OUT) $(DEMO_ARGS)
else
	$(VENV)/bin/pebal_demo --data $(DATA) --out $(DEMO_OUT) $(DEMO_ARGS)
endif

# `make default-model`: the shipped default model from nothing, with the commands a user runs on
# real data. World seed 0 trains (and is the benchmark's test set); world seed 1's Fishyscapes
# split is the validation set the alarm operating points (`pebal threshold`) are taken from. Writes the run under
# $(MODEL_RUN), the model to $(DEFAULT_MODEL), the benchmark table to docs/synthetic_results.md.
MODEL_RUN     ?= runs/default_model
DEFAULT_MODEL ?= pebal_core/assets/default_model.safetensors
PEBAL         := $(VENV)/bin/pebal

default-model: $(STAMP)
	rm -rf $(MODEL_RUN)
	$(PEBAL) synth --out $(MODEL_RUN)/world --seed 0 --workers 2
	$(PEBAL) synth --out $(MODEL_RUN)/val_world --seed 1 --parts fishyscapes --workers 2
	$(PEBAL) train --config config/synthetic_pretrain.yaml out_dir=$(MODEL_RUN)/pretrain \
		data.cityscapes=$(MODEL_RUN)/world/cityscapes
	$(PEBAL) train --config config/synthetic_pebal.yaml out_dir=$(MODEL_RUN)/pebal \
		model.base=$(MODEL_RUN)/pretrain/model.safetensors \
		data.cityscapes=$(MODEL_RUN)/world/cityscapes data.coco=$(MODEL_RUN)/world/coco
	$(PEBAL) eval --model $(MODEL_RUN)/pebal/model.safetensors --dataset synthetic --split LostAndFound \
		--root $(MODEL_RUN)/val_world --methods pebal --out $(MODEL_RUN)/threshold
	$(PEBAL) threshold --model $(MODEL_RUN)/pebal/model.safetensors --dataset synthetic --split LostAndFound \
		--root $(MODEL_RUN)/val_world --json $(MODEL_RUN)/threshold/operating_points.json --write $(DEFAULT_MODEL)
	$(PY) benchmarks/bench_synthetic.py --world $(MODEL_RUN)/world --pretrained $(MODEL_RUN)/pretrain/model.safetensors \
		--finetuned $(DEFAULT_MODEL) --json $(MODEL_RUN)/synthetic_results.json --markdown docs/synthetic_results.md

# `make real-model`: the real-data PEBAL model from nothing (benchmarks/real_model.py): fine-tune the
# real Cityscapes $(ARCH) on CamVid train with AnomalyMix from COCO panoptic objects, choose the
# step on the held-out data (fs_static images 0-14, CamVid val), set the alarm threshold on the
# fs_static hold-out, write the model, then read the test sets once and write the tables of
# docs/real_data_results.md. Data from $(REALDATA). Measured for ESPNet on one core of the busy
# 2-core machine: 12 min training, 10 min selection, 12 min for the test sets at 512x1024 and
# 24 min at native resolution (ENet: 24 min training).
# ARCH=enet makes the ENet model under $(REAL_RUN)/enet (its base has no licence: never commit it).
REALDATA   ?= ../shared/realdata
ARCH       ?= espnet_p2q8
REAL_RUN   ?= runs/real_model
REAL_MODEL ?= $(if $(filter espnet_p2q8,$(ARCH)),pebal_core/assets/real_espnet_pebal.safetensors,$(REAL_RUN)/$(ARCH)/real_pebal.safetensors)

real-model: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/real_model.py --arch $(ARCH) --realdata $(REALDATA) --out $(REAL_RUN) \
		--ship $(REAL_MODEL) --stages energy,train,select,ship,test,evidence
	$(PY) benchmarks/real_data_pebal.py --out $(REAL_RUN) --doc docs/real_data_results.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_realtime.py

clean:
	rm -rf demo_out build *.egg-info .pytest_cache
