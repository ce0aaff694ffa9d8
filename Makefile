# Two commands: `make demo` and `make test`. Each creates .venv and installs requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo
export PYTHONUNBUFFERED := 1

# Demo settings, sized for a 2-core CPU (see README "What make demo does").
DEMO_IMAGES ?= 3000
DEMO_TEST_IMAGES ?= 300
DEMO_FIELD ?= 128
DEMO_ZOOM ?= 2.4
DEMO_SIZE ?= 64
DEMO_WIDTH ?= 32
DEMO_EPOCHS ?= 8
DEMO_BATCH ?= 32
DEMO_LR ?= 1e-2
DEMO_FOLDS ?= 3
DEMO_MIN_PER_CLASS ?= 100

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
	@start=$$(date +%s); set -e; \
	echo "== 1/5 synthetic dataset (Kaggle layout) =="; \
	$(PY) -m train synth --out $(DEMO)/data --images $(DEMO_IMAGES) --test-images $(DEMO_TEST_IMAGES) \
		--size $(DEMO_FIELD) --zoom $(DEMO_ZOOM) --min-per-class $(DEMO_MIN_PER_CLASS) --seed 0; \
	echo "== 2/5 train $(DEMO_FOLDS) folds =="; \
	rm -rf $(DEMO)/run $(DEMO)/deploy $(DEMO)/submission; \
	$(PY) -m train fit --data $(DEMO)/data --out $(DEMO)/run --folds $(DEMO_FOLDS) --arch resnet18 --width $(DEMO_WIDTH) \
		--size $(DEMO_SIZE) --epochs $(DEMO_EPOCHS) --batch-size $(DEMO_BATCH) --lr $(DEMO_LR) --seed 0; \
	echo "== 3/5 export to ONNX (folds, ensemble, INT8 CPU) =="; \
	$(PY) -m export onnx --run $(DEMO)/run --out $(DEMO)/deploy --precision fp32,int8; \
	echo "== 4/5 batch inference on the held-out set =="; \
	$(PY) -m runtime infer --model $(DEMO)/deploy --images $(DEMO)/data/test --ids $(DEMO)/data/sample_submission.csv \
		--out $(DEMO)/submission; \
	$(PY) -m runtime score --submission $(DEMO)/submission/submission.csv --labels $(DEMO)/data/test_labels.csv; \
	echo "== 5/5 benchmark (model alone and end to end from PNG) =="; \
	$(PY) -m runtime bench --model $(DEMO)/deploy --backend onnxruntime:fp32,onnxruntime:int8,torch \
		--batch-sizes 1,32 --images $(DEMO)/data/test --seconds 2 --json $(DEMO)/bench.json; \
	echo; echo "demo finished in $$(( $$(date +%s) - start ))s. Outputs:"; \
	echo "  $(DEMO)/data        synthetic dataset (train.csv, train/, test/, masks/)"; \
	echo "  $(DEMO)/run         checkpoints, metrics.json, thresholds.json, oof.csv, curves.png"; \
	echo "  $(DEMO)/deploy      ONNX files and model.json"; \
	echo "  $(DEMO)/submission  submission.csv, probabilities.csv, errors.csv"; \
	echo "  $(DEMO)/bench.json  benchmark figures"

bench-train: $(STAMP)
	$(PY) scripts/bench_train.py --width $(DEMO_WIDTH) --size $(DEMO_SIZE) --batch-size $(DEMO_BATCH)

clean:
	rm -rf $(DEMO)
