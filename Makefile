# The two commands: `make demo` (set up, fit the bundled example) and `make test` (set up, run
# the tests). Both build the environment from nothing on a fresh machine.
PY := .venv/bin/python
STAMP := .venv/.pbrfit-setup

.PHONY: setup demo test benchmark example extensions clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt core/pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh
	touch $@

demo: setup
	.venv/bin/pbrfit fit examples/demo/job.toml --out out/demo
	@echo "open out/demo/report.html"

# test files run on TEST_WORKERS pytest-xdist workers, each file whole on one (its module
# fixtures built once); 2 suits CI's 2 cores (about 16 min there for 24-27 on one worker). Each
# worker takes up to ~6 GB for the texture fits: more workers want the memory as well as the cores.
# The tests that assert a wall time (marker ``timing``) run after, alone.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 -m "not timing" tests
	$(PY) -m pytest -q -m timing tests

benchmark: setup
	$(PY) scripts/benchmark_fit.py --out benchmarks

example: setup
	$(PY) scripts/make_example.py

# Blender zips (Windows and macOS: Blender 4.2-5.3; Linux: 4.2-5.0, as PyTorch's CPU index, the
# source of a Linux CPU torch for Python 3.13, is out of reach here) and the Kit extension, in dist/
extensions: setup
	$(PY) scripts/build_blender_extension.py --platform windows-x64 --platform macos-arm64
	$(PY) scripts/build_blender_extension.py --platform linux-x64 --python 3.11
	$(PY) scripts/build_kit_extension.py

clean:
	rm -rf out dist .venv
