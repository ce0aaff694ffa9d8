# Two commands: `make demo` and `make test`. Each creates .venv and installs requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo
export PYTHONUNBUFFERED := 1

# Demo settings, sized for a 2-core CPU (see README "What make demo does").
DEMO_IMAGES ?= 1200
DEMO_TEST_IMAGES ?= 300
DEMO_FIELD ?= 256
DEMO_SIZE ?= 128
DEMO_WIDTH ?= 32
DEMO_EPOCHS ?= 10
DEMO_BATCH ?= 16
DEMO_LR ?= 2e-3

.PHONY: demo test install clean bench-train

$(STAMP): requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

demo: $(STAMP)
	@start=$$(date +%s); \
	$(PY) -m train synth --out $(DEMO)/data --images $(DEMO_IMAGES) --test-images $(DEMO_TEST_IMAGES) \
		--size $(DEMO_FIELD) --seed 0 && \
	rm -rf $(DEMO)/run && \
	$(PY) -m train fit --data $(DEMO)/data --out $(DEMO)/run --folds 3 --arch resnet18 --width $(DEMO_WIDTH) \
		--size $(DEMO_SIZE) --epochs $(DEMO_EPOCHS) --batch-size $(DEMO_BATCH) --lr $(DEMO_LR) --seed 0 && \
	echo "demo finished in $$(( $$(date +%s) - start ))s; outputs: $(DEMO)/data (synthetic dataset), $(DEMO)/run (checkpoints, metrics.json, curves.png)"

bench-train: $(STAMP)
	$(PY) scripts/bench_train.py --width $(DEMO_WIDTH) --size $(DEMO_SIZE) --batch-size $(DEMO_BATCH)

clean:
	rm -rf $(DEMO)
