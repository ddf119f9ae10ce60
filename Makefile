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
# `make demo`: synthetic LostAndFound-style sequence + the shipped synthetic-world model -> bag ->
# pebal_node -> recorded bag -> scores, overlays and a GIF under $(DEMO_OUT). `make demo
# DATA=/path/to/LostAndFound` runs the same chain on the real dataset with the shipped default
# (real-camera) model; DEMO_ARGS adds pebal_demo options (e.g. --frames 100 --input-size 512x1024
# --model ckpt.safetensors), SYNTH_ARGS options of `pebal synth`.
DATA      ?=
DEMO_OUT  ?= demo_out
DEMO_ARGS ?=
SYNTH_ARGS ?=
# `make real-demo`: the real frames of FS_LostFound_full and RoadObsticle21 (Validation_Dataset
# bundle under $(REALDATA)) -> bag -> pebal_node with the shipped default model -> recorded bag ->
# scores and overlays under $(REAL_DEMO_OUT), and docs/real_overlay.png (several frames in one picture).
# The frames are single images of unrelated scenes: persistence off (k = n = 1); the ego-vehicle mask
# is the LostAndFound car's (`lostandfound`, docs/ego_mask.md; the RoadObstacle21 frames, from a camera
# that sees no car and of another aspect ratio, run without it); the rest of the alarm settings are the
# model's operating point (obstacles of at least 320 pixels at 2048x1024, the size of the fs_static
# hold-out it was chosen on, scaled to each image's size).
REALDATA      ?= ../shared/realdata
REAL_DEMO_OUT ?= demo_out_real

.PHONY: venv test demo real-demo real-pictures synthetic-model real-model lint bench clean

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
	$(VENV)/bin/pebal_demo --data $(DEMO_OUT)/synth/lostandfound --out $(DEMO_OUT) --model synthetic $(DEMO_ARGS)
else
	$(VENV)/bin/pebal_demo --data $(DATA) --out $(DEMO_OUT) $(DEMO_ARGS)
endif

real-demo: $(STAMP)
	$(VENV)/bin/pebal_demo --data $(REALDATA)/Validation_Dataset --sequence FS_LostFound_full \
		--sequence RoadObsticle21 --out $(REAL_DEMO_OUT) --sheet docs/real_overlay.png --per-sequence \
		--node-param persistence.k:=1 --node-param persistence.n:=1 --node-param alarms.ego_mask:=lostandfound \
		$(DEMO_ARGS)

# `make real-pictures`: the shipped default model on the real Cityscapes frames of $(REALDATA):
# docs/real_cityscapes_labels.png and docs/real_cityscapes_overlay.png (rerun when the model changes).
real-pictures: $(STAMP)
	$(PY) benchmarks/real_frame_pictures.py --realdata $(REALDATA)

# `make synthetic-model`: the shipped synthetic-world model (`--model synthetic`) from nothing, with
# the commands a user runs on real data. World seed 0 trains (and is the benchmark's test set);
# world seed 1's Fishyscapes split is the validation set the alarm operating points (`pebal threshold`) are taken from. Writes
# the run under $(MODEL_RUN), the model to $(SYNTHETIC_MODEL), the benchmark table to
# docs/synthetic_results.md.
MODEL_RUN       ?= runs/synthetic_model
SYNTHETIC_MODEL ?= pebal_core/assets/synthetic_model.safetensors
PEBAL           := $(VENV)/bin/pebal

synthetic-model: $(STAMP)
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
		--root $(MODEL_RUN)/val_world --json $(MODEL_RUN)/threshold/operating_points.json --write $(SYNTHETIC_MODEL)
	$(PY) benchmarks/bench_synthetic.py --world $(MODEL_RUN)/world --pretrained $(MODEL_RUN)/pretrain/model.safetensors \
		--finetuned $(SYNTHETIC_MODEL) --json $(MODEL_RUN)/synthetic_results.json --markdown docs/synthetic_results.md

# `make real-model`: the real-data PEBAL model from nothing (benchmarks/real_model.py): fine-tune the
# real Cityscapes $(ARCH) on CamVid train with AnomalyMix from COCO panoptic objects, choose the
# step on the held-out data (fs_static images 0-14, CamVid val), set the alarm operating points on
# the fs_static hold-out (benchmarks/real_operating_point.py: default fpr:0.01), write the model, then read the test sets once and write the tables of
# docs/real_data_results.md. Data from $(REALDATA). Measured for ESPNet on one core of the busy
# 2-core machine: 12 min training, 10 min selection, 12 min for the test sets at 512x1024 and
# 24 min at native resolution (ENet: 24 min training).
# ARCH=enet makes the ENet model under $(REAL_RUN)/enet (its base has no licence: never commit it).
ARCH       ?= espnet_p2q8
REAL_RUN   ?= runs/real_model
REAL_MODEL ?= $(if $(filter espnet_p2q8,$(ARCH)),pebal_core/assets/real_espnet_pebal.safetensors,$(REAL_RUN)/$(ARCH)/real_pebal.safetensors)

real-model: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/real_model.py --arch $(ARCH) --realdata $(REALDATA) --out $(REAL_RUN) \
		--ship $(REAL_MODEL) --stages energy,train,select,ship,test,evidence
	$(PY) benchmarks/real_operating_point.py --model $(REAL_MODEL) --realdata $(REALDATA)
	$(PY) benchmarks/real_data_pebal.py --out $(REAL_RUN) --doc docs/real_data_results.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_realtime.py

clean:
	rm -rf demo_out demo_out_real build *.egg-info .pytest_cache
