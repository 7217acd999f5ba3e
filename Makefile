# Two commands matter: `make demo` and `make test`. Both install what they miss (Debian packages).
SWIFT ?= swift
BUILD_FLAGS ?=
VPNSUP := .build/debug/vpnsup

.PHONY: all deps build test lab-test docker-test image demo clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

# Unit tests and root tests. The root tests run in a private network namespace (unshare --net),
# so nothing they do to links, addresses or nftables can reach this machine's own network;
# then a short pass of every fuzz target (fuzz/run.sh: replays the crash regressions, 5 s each),
# the differential corpus test against OpenVPN 2.6 itself (Tests/corpus/run.sh),
# the lab proves its own leak detector (selftest, and its WireGuard side: wireguard-selftest),
# the Kubernetes manifests render and validate, the cluster simulation proves its topology and
# its leak detector (Tests/k8s/sim.sh, ~25 s), the end-to-end tests run against the built binary,
# a short fault-injection soak, the systemd units, and the original Docker scenario with the
# image (Tests/docker/e2e.sh).
test: build
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	unshare --net -- sh -c 'ip link set lo up && exec $(SWIFT) test --skip-build $(BUILD_FLAGS)'
	SWIFT=$(SWIFT) FUZZ_SECONDS=5 bash fuzz/run.sh
	VPNSUP=$(VPNSUP) bash Tests/corpus/run.sh
	bash Tests/lab/selftest.sh
	bash Tests/lab/wireguard-selftest.sh
	bash Tests/k8s/manifests.sh
	bash Tests/k8s/sim.sh
	VPNSUP=$(VPNSUP) bash Tests/lab/e2e.sh
	VPNSUP=$(VPNSUP) bash Tests/lab/wireguard-e2e.sh
	VPNSUP=$(VPNSUP) SOAK_FAULTS=12 bash Tests/lab/soak.sh
	VPNSUP=$(VPNSUP) SOAK_FAULTS=9 SOAK_TUNNEL=wireguard bash Tests/lab/soak.sh
	VPNSUP=$(VPNSUP) bash Tests/systemd/units.sh
	SWIFT=$(SWIFT) bash scripts/build-static.sh
	VPNSUP=dist/vpnsup bash Tests/docker/e2e.sh

# The fault-injection soak (minutes; SOAK_FAULTS, SOAK_SEED to replay a run). `make test` runs 12.
SOAK_FAULTS ?= 150
.PHONY: soak
soak: build
	VPNSUP=$(VPNSUP) SOAK_FAULTS=$(SOAK_FAULTS) bash Tests/lab/soak.sh

# Only the Docker scenario (starts dockerd when none runs).
docker-test: deps
	SWIFT=$(SWIFT) bash scripts/build-static.sh
	VPNSUP=dist/vpnsup bash Tests/docker/e2e.sh

# The image, from a binary built here (for the build in the Swift image: docker build -t vpnsup .).
image: deps
	SWIFT=$(SWIFT) bash scripts/build-static.sh
	bash scripts/debian-base-image.sh
	docker build --target prebuilt -t vpnsup .

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
	VPNSUP=$(VPNSUP) bash Tests/corpus/run.sh

# Firewall commit timings with 1, 1,000 and 10,000 port forwards (release build, private namespace).
.PHONY: bench-firewall
bench-firewall: deps
	SWIFT=$(SWIFT) bash scripts/bench-firewall.sh

# Every benchmark with its baselines in one run (release builds in .build-bench, namespaces only),
# then docs/benchmarks.md's tables and charts. Knobs: RUNS=, SECTIONS=, SLOW_RUNS= (bench/run.sh).
.PHONY: bench
bench: deps
	SWIFT=$(SWIFT) bash bench/run.sh

clean:
	rm -rf .build .build-static .build-fuzz dist
