# Two commands: `make demo` and `make test`. Each creates .venv and installs requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo
export PYTHONUNBUFFERED := 1

# Demo settings, sized for the whole demo to take at most about ten minutes on a 2-core CPU
# (341 s on a 2-core Xeon with AVX-512; docs/training.md says why each setting was chosen): 128-px fields at zoom 2.4 (one or two cells)
# trained at 96 px by a width-16 ResNet-18 with BCE and strong AdamW weight decay, out-of-fold
# predictions averaged over 4 test-time views, three folds trained at once in three processes.
DEMO_IMAGES ?= 3000
DEMO_TEST_IMAGES ?= 300
DEMO_FIELD ?= 128
DEMO_ZOOM ?= 2.4
DEMO_SIZE ?= 96
DEMO_WIDTH ?= 16
DEMO_EPOCHS ?= 19
DEMO_BATCH ?= 32
DEMO_LR ?= 1e-2
DEMO_WD ?= 0.3
DEMO_LOSS ?= bce
DEMO_TTA ?= 4
DEMO_FOLDS ?= 3
DEMO_JOBS ?= 3
DEMO_MIN_PER_CLASS ?= 100

.PHONY: demo test install clean bench-train xvfb

# pywuffs (Wuffs' PNG decoder) builds from source. On an x86-64 CPU with AVX2, BMI2 and PCLMUL (x86
# servers since about 2015) it is built for them, so Wuffs takes its SIMD code at compile time
# instead of asking the CPU (CPUID, six times a decode: pywuffs makes a fresh decoder per call, and
# on a virtual machine each CPUID is an exit to the hypervisor): 6-7 % faster per channel on a KVM
# guest (docs/benchmarks.md). Built without the wheel cache, so an older generic build is not reused;
# the result runs on CPUs with those features only.
WUFFS_CFLAGS := $(shell [ "$$(uname -m)" = x86_64 ] && for f in avx2 bmi2 pclmulqdq popcnt sse4_2; do \
	grep -qw $$f /proc/cpuinfo || exit 1; done && echo "-mavx2 -mbmi2 -mpclmul -mpopcnt -msse4.2")

# pip keeps an installed pywuffs, so a venv made before these flags (or on another CPU) would keep
# its build. The venv records the build it has (version and flags) in WUFFS_STAMP; when that is
# missing or differs from what this Makefile would build, pywuffs is rebuilt in place
# (--force-reinstall --no-deps), and the install steps after it run again.
WUFFS_SPEC := $(shell grep -o '^pywuffs==[^ ]*' requirements.txt)
WUFFS_BUILD := $(WUFFS_SPEC) CFLAGS=$(strip $(WUFFS_CFLAGS))
WUFFS_STAMP := $(VENV)/.pywuffs-build
ifneq ($(shell cat $(WUFFS_STAMP) 2>/dev/null),$(WUFFS_BUILD))
$(WUFFS_STAMP): FORCE
endif

.PHONY: FORCE
FORCE:

$(WUFFS_STAMP):
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CFLAGS="$$CFLAGS $(WUFFS_CFLAGS)" CXXFLAGS="$$CXXFLAGS $(WUFFS_CFLAGS)" \
		$(PY) -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "$(WUFFS_SPEC)"
	echo '$(WUFFS_BUILD)' > $(WUFFS_STAMP)

# The project itself goes in as an editable install (no dependencies: requirements.txt has them
# all), so `.venv/bin/python -m train|export|runtime|viewer` works from any directory.
$(STAMP): requirements.txt pyproject.toml $(WUFFS_STAMP)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The viewer's real-window test needs Xvfb and Qt's xcb libraries (Debian packages); without
# them that one test skips. Mesa's DRI drivers (libgl1-mesa-dri) give Xvfb the OpenGL a Linux
# desktop has, which is what the test must run against (the CAM stack once crashed against Mesa's libLLVM; the test guards it).
XVFB_PACKAGES := xvfb xauth libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-xkb1 libgl1 libegl1 libfontconfig1 libdbus-1-3 xdotool

xvfb:
	@command -v xvfb-run >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(XVFB_PACKAGES)) >/dev/null 2>&1; } \
		|| echo "note: xvfb not installed; the real-window viewer test will skip"

test: $(STAMP) xvfb
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

demo: $(STAMP)
	@start=$$(date +%s); set -e; lap=$$start; \
	took() { now=$$(date +%s); echo "   ($$(( now - lap ))s)"; lap=$$now; }; \
	echo "== 1/7 synthetic dataset (Kaggle layout) =="; \
	$(PY) -m train synth --out $(DEMO)/data --images $(DEMO_IMAGES) --test-images $(DEMO_TEST_IMAGES) \
		--size $(DEMO_FIELD) --zoom $(DEMO_ZOOM) --min-per-class $(DEMO_MIN_PER_CLASS) --seed 0; took; \
	echo "== 2/7 train $(DEMO_FOLDS) folds =="; \
	rm -rf $(DEMO)/run $(DEMO)/deploy $(DEMO)/submission; \
	$(PY) -m train fit --data $(DEMO)/data --out $(DEMO)/run --folds $(DEMO_FOLDS) --arch resnet18 --width $(DEMO_WIDTH) \
		--size $(DEMO_SIZE) --epochs $(DEMO_EPOCHS) --batch-size $(DEMO_BATCH) --lr $(DEMO_LR) --weight-decay $(DEMO_WD) \
		--loss $(DEMO_LOSS) \
		--tta $(DEMO_TTA) --jobs $(DEMO_JOBS) --seed 0; took; \
	echo "== 3/7 export to ONNX (folds, ensemble, INT8 for ONNX Runtime on this CPU) =="; \
	$(PY) -m export onnx --run $(DEMO)/run --out $(DEMO)/deploy --precision fp32,int8 --int8-targets cpu; took; \
	echo "== 4/7 batch inference on the held-out set =="; \
	$(PY) -m runtime infer --model $(DEMO)/deploy --images $(DEMO)/data/test --ids $(DEMO)/data/sample_submission.csv \
		--out $(DEMO)/submission; \
	$(PY) -m runtime score --submission $(DEMO)/submission/submission.csv --labels $(DEMO)/data/test_labels.csv; took; \
	echo "== 5/7 benchmark (model alone and end to end from PNG) =="; \
	$(PY) -m runtime bench --model $(DEMO)/deploy --backend onnxruntime:fp32,onnxruntime:int8,torch \
		--batch-sizes 1,32 --images $(DEMO)/data/test --seconds 1 --json $(DEMO)/bench.json; took; \
	echo "== 6/7 viewer screenshots (offscreen) and 7/7 analysis report, side by side on the two cores =="; \
	mkdir -p $(DEMO)/screenshots; \
	QT_QPA_PLATFORM=offscreen $(PY) -m viewer --data $(DEMO)/data/test --model $(DEMO)/deploy --run $(DEMO)/run \
		--screenshot $(DEMO)/screenshots/viewer 2>$(DEMO)/screenshots/viewer.log & viewer=$$!; \
	$(PY) -m train analyze --data $(DEMO)/data --run $(DEMO)/run --out $(DEMO)/report; \
	wait $$viewer || { echo "viewer screenshots failed ($(DEMO)/screenshots/viewer.log):"; \
		tail -3 $(DEMO)/screenshots/viewer.log; exit 1; }; took; \
	echo; echo "demo finished in $$(( $$(date +%s) - start ))s. Outputs:"; \
	echo "  $(DEMO)/data        synthetic dataset (train.csv, train/, test/, masks/)"; \
	echo "  $(DEMO)/run         checkpoints, metrics.json, thresholds.json, oof.csv, curves.png"; \
	echo "  $(DEMO)/deploy      ONNX files and model.json"; \
	echo "  $(DEMO)/submission  submission.csv, probabilities.csv, errors.csv"; \
	echo "  $(DEMO)/bench.json  benchmark figures"; \
	echo "  $(DEMO)/report      report.html and its figures"; \
	echo "  $(DEMO)/screenshots viewer screenshots; open the viewer with: $(PY) -m viewer --data $(DEMO)/data/test --model $(DEMO)/deploy --run $(DEMO)/run"

bench-train: $(STAMP)
	$(PY) scripts/bench_train.py --width $(DEMO_WIDTH) --size $(DEMO_SIZE) --batch-size $(DEMO_BATCH)

clean:
	rm -rf $(DEMO)
