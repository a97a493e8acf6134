# The two commands: `make demo` (set up, fit the bundled example) and `make test` (set up, run
# the tests). Both build the environment from nothing on a fresh machine.
PY := .venv/bin/python
STAMP := .venv/.pbrfit-setup

.PHONY: setup demo test benchmark example clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt core/pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh
	touch $@

demo: setup
	.venv/bin/pbrfit fit examples/demo/job.toml --out out/demo
	@echo "open out/demo/report.html"

test: setup
	$(PY) -m pytest -q tests

benchmark: setup
	$(PY) scripts/benchmark_fit.py --out benchmarks

example: setup
	$(PY) scripts/make_example.py

clean:
	rm -rf out .venv
