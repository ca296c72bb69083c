# The project's commands. `make serve` and `make test` are the README's two commands: each sets up what it
# needs on a fresh machine and runs.
PYTHON ?= python3
VENV := .venv
SERVE_VENV := .venv-serve
HOST ?= 127.0.0.1
PORT ?= 50051
METRICS_PORT ?= 9464

.PHONY: serve test setup protos protos-check contracts models imputation lock audit clean native-wheel bench-go

# The native request decoder (native/: Rust, PyO3, prost; services/decode.py) is built into a venv where cargo
# is on PATH; without cargo the server decodes requests in Python (--decoder auto says which in its start line).
NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs native/src/gen/*.rs native/src/front/*.rs)
define install_native
	@if command -v cargo >/dev/null 2>&1; then \
		$(1)/bin/pip install --quiet ./native && touch $(1)/.native; \
	else echo "no cargo: the native request decoder is not built; requests are decoded in Python"; fi
endef

# A lean environment with only the server's dependencies (no torch), serving the bundled models.
$(SERVE_VENV)/.done: pyproject.toml requirements/server.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install --quiet -c requirements/server.txt .
	touch $@

$(SERVE_VENV)/.native: $(SERVE_VENV)/.done $(NATIVE_SOURCES)
	$(call install_native,$(SERVE_VENV))

serve: $(SERVE_VENV)/.native
	$(SERVE_VENV)/bin/dwcp-inference serve --host $(HOST) --port $(PORT) --metrics-port $(METRICS_PORT)

# The development environment: server, training (torch, scikit-learn) and test tools.
$(VENV)/.done: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c requirements/dev.txt -e '.[train,dev,keras]'
	touch $@

$(VENV)/.native: $(VENV)/.done $(NATIVE_SOURCES)
	$(call install_native,$(VENV))

# The Open Inference Protocol's real clients (tritonclient[grpc], kserve) for tests/test_v2.py, in their own venv:
# they need protobuf < 7 (ours is 7) and clash with each other in one process (both define package `inference`).
V2CLIENTS_VENV := .venv-v2clients
$(V2CLIENTS_VENV)/.done: requirements/v2clients.txt
	$(PYTHON) -m venv $(V2CLIENTS_VENV)
	$(V2CLIENTS_VENV)/bin/pip install --quiet --upgrade pip
	$(V2CLIENTS_VENV)/bin/pip install --quiet -c requirements/v2clients.txt 'tritonclient[grpc]' kserve
	touch $@

setup: $(VENV)/.native $(V2CLIENTS_VENV)/.done
	scripts/install_system_deps.sh

test: setup
	$(VENV)/bin/python -m pytest -q

# Regenerate the committed Python and Go stubs from protos/ (see docs/protos.md). The Go side needs protoc
# and its plugins, which scripts/install_go_tools.sh installs at pinned versions.
protos: $(VENV)/.done
	scripts/gen_protos.sh $(VENV)/bin/python
	scripts/gen_v2_protos.sh $(VENV)/bin/python
	scripts/install_go_tools.sh
	scripts/gen_go_protos.sh
	@if command -v cargo >/dev/null 2>&1; then \
		cd native/codegen && PROTOC="$(CURDIR)/native/codegen/protoc.sh" PYTHON="$(CURDIR)/$(VENV)/bin/python" \
			cargo run --quiet --locked; \
	else echo "no cargo: native/src/gen not regenerated"; fi

# Regenerate the Go table of the model contracts (flat layouts, field names, ranges) from dwcp_inference/contracts/;
# tests/test_contracts.py fails when the committed file differs.
contracts: $(VENV)/.done
	$(VENV)/bin/python -m dwcp_inference.contracts go > clients/go/inference/contract_gen.go.tmp  # a failure keeps the old file
	mv clients/go/inference/contract_gen.go.tmp clients/go/inference/contract_gen.go

# The native decoder as a wheel in native/dist (deploy/docker/build.sh copies it into the image).
native-wheel: $(VENV)/.done
	rm -rf native/dist
	$(VENV)/bin/pip wheel --quiet --no-deps --wheel-dir native/dist ./native

protos-check: protos
	git diff --exit-code -- dwcp_inference/api clients/go/gen native/src/gen || (echo "generated stubs are stale: run make protos" && exit 1)

# Retrain the bundled default models (about 5 minutes on 2 cores) and their report.
models: $(VENV)/.done
	rm -rf dwcp_inference/models docs/default-models
	$(VENV)/bin/dwcp-inference train all --out dwcp_inference/models --report docs/default-models

# Add the imputation section (docs/repository.md) to bundled versions trained before it; metadata.json only.
imputation: $(VENV)/.done
	$(VENV)/bin/python scripts/add_imputation.py dwcp_inference/models

# The Go embedded runtime's benchmarks (clients/go/embedded: single calls in-process, request to answer, beside
# the same calls to a server it starts); BENCHTIME=2s for steadier figures.
BENCHTIME ?= 1s
bench-go:  # after make setup: the remote benchmarks start .venv/bin/dwcp-inference
	cd clients/go && go test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./embedded

# Refresh the lock files (pip constraints used by setup, serve and the image) to the newest allowed versions.
lock:
	scripts/lock.sh $(PYTHON)

# Known vulnerabilities in the locked dependencies. Needs PyPI's JSON API and vuln.go.dev, which CI's network
# here does not reach (pip-audit then reports every package as "could not be audited"): run it where they are.
audit: $(VENV)/.done
	[ -x .venv-audit/bin/pip-audit ] || ($(PYTHON) -m venv .venv-audit && .venv-audit/bin/pip install --quiet pip-audit)
	.venv-audit/bin/pip-audit --strict --progress-spinner off -r requirements/server.txt
	.venv-audit/bin/pip-audit --strict --progress-spinner off -r requirements/dev.txt
	cd clients/go && go run golang.org/x/vuln/cmd/govulncheck@latest ./...

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(V2CLIENTS_VENV) build *.egg-info
