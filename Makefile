# Two commands matter: `make demo` and `make test`. Both install what they miss (Debian packages).
SWIFT ?= swift
BUILD_FLAGS ?=
VPNSUP := .build/debug/vpnsup

.PHONY: all deps build test lab-test demo clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

# Unit tests and root tests. The root tests run in a private network namespace (unshare --net),
# so nothing they do to links, addresses or nftables can reach this machine's own network;
# then the lab proves its own leak detector (selftest) and the end-to-end tests run against the
# built binary.
test: build
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	unshare --net -- sh -c 'ip link set lo up && exec $(SWIFT) test --skip-build $(BUILD_FLAGS)'
	bash Tests/lab/selftest.sh
	VPNSUP=$(VPNSUP) bash Tests/lab/e2e.sh

# Only the namespace lab's end-to-end tests (needs `make build` first).
lab-test: build
	VPNSUP=$(VPNSUP) bash Tests/lab/e2e.sh

# Builds, starts the namespace lab, routes a client through vpnsup, shows status, tears down.
demo: build
	VPNSUP=$(VPNSUP) bash lab/demo.sh

# libFuzzer targets (Sources/Fuzz*, built only by fuzz/run.sh with -sanitize=fuzzer,address into
# .build-fuzz): each runs FUZZ_SECONDS from the seeds in fuzz/corpus; prints executions per target,
# fails on a crash. fuzz-short is the bounded pass for CI and `make test`.
FUZZ_SECONDS ?= 60
.PHONY: fuzz fuzz-short
fuzz: deps
	SWIFT=$(SWIFT) FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

fuzz-short: deps
	SWIFT=$(SWIFT) FUZZ_SECONDS=5 bash fuzz/run.sh

# Firewall commit timings with 1, 1,000 and 10,000 port forwards (release build, private namespace).
.PHONY: bench-firewall
bench-firewall: deps
	SWIFT=$(SWIFT) bash scripts/bench-firewall.sh

clean:
	rm -rf .build .build-fuzz
