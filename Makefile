# Two commands matter: `make demo` and `make test`. Both install what they miss (Debian packages,
# only those their profile needs: scripts/install-deps.sh).
SWIFT ?= swift
BUILD_FLAGS ?=
VPNSUP := .build/debug/vpnsup
# make install: PREFIX for the binary and the namespace helper, DESTDIR for staging, the units
# where systemd reads an administrator's units.
PREFIX ?= /usr/local
DESTDIR ?=
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
# The commit `vpnsup --version` names (Package.swift reads it).
export VPNSUP_COMMIT ?= $(shell bash scripts/commit.sh)

.PHONY: all deps deps-build deps-demo build test lab-test docker-test image demo install uninstall clean

all: build

deps:
	@bash scripts/install-deps.sh test

deps-build:
	@bash scripts/install-deps.sh build

deps-demo:
	@bash scripts/install-deps.sh demo

build: deps-build
	$(SWIFT) build $(BUILD_FLAGS)

# Unit tests and root tests. The root tests run in a private network namespace (unshare --net),
# so nothing they do to links, addresses or nftables can reach this machine's own network (they
# run only where VPNSUP_TEST_NETNS names the namespace they are in: Tests/TestSupport);
# then a short pass of every fuzz target (fuzz/run.sh: replays the crash regressions, 5 s each),
# the differential corpus test against OpenVPN 2.6 itself (Tests/corpus/run.sh),
# the lab proves its own leak detector (selftest, and its WireGuard side: wireguard-selftest),
# the Kubernetes manifests render and validate, the cluster simulation runs vpnsup run and vpnsup
# join with the manifests' environment (Tests/k8s/sim.sh, ~50 s), the end-to-end tests run against the built binary,
# the metrics scraped from the LAN (Tests/lab/metrics.sh, ~15 s), a short fault-injection soak,
# the systemd units, and the original Docker scenario with the image built both ways
# (Tests/docker/e2e.sh: `--target prebuilt` from dist/vpnsup, and the Dockerfile's own build stage
# on a Swift image made from the toolchain here; the whole scenario against each). It starts by
# recording what runs and ends by failing if anything it started still runs or a namespace it
# made remains (scripts/leftovers.sh).
LEFTOVERS := .build/leftovers.state
test: deps build
	bash scripts/leftovers.sh start $(LEFTOVERS)
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	unshare --net -- sh -c 'ip link set lo up && VPNSUP_TEST_NETNS=$$(readlink /proc/self/ns/net) exec $(SWIFT) test --skip-build $(BUILD_FLAGS)'
	SWIFT=$(SWIFT) FUZZ_SECONDS=5 bash fuzz/run.sh
	VPNSUP=$(VPNSUP) bash Tests/corpus/run.sh
	bash Tests/lab/selftest.sh
	bash Tests/lab/wireguard-selftest.sh
	bash Tests/k8s/manifests.sh
	VPNSUP=$(VPNSUP) bash Tests/k8s/sim.sh
	VPNSUP=$(VPNSUP) bash Tests/lab/e2e.sh
	VPNSUP=$(VPNSUP) bash Tests/lab/metrics.sh
	VPNSUP=$(VPNSUP) SOAK_FAULTS=12 bash Tests/lab/soak.sh
	VPNSUP=$(VPNSUP) bash Tests/systemd/units.sh
	SWIFT=$(SWIFT) bash scripts/build-static.sh
	VPNSUP=dist/vpnsup bash Tests/docker/e2e.sh
	bash scripts/leftovers.sh check $(LEFTOVERS)

# The fault-injection soak (minutes; SOAK_FAULTS, SOAK_SEED to replay a run). `make test` runs 12.
SOAK_FAULTS ?= 150
.PHONY: soak
soak: build
	VPNSUP=$(VPNSUP) SOAK_FAULTS=$(SOAK_FAULTS) bash Tests/lab/soak.sh

# Only the Docker scenario, against the prebuilt image and the one built by the Dockerfile's own
# build stage (an engine of its own in a namespace; KEEP_IMAGES=1 keeps its images as a cache).
docker-test: deps
	SWIFT=$(SWIFT) bash scripts/build-static.sh
	VPNSUP=dist/vpnsup bash Tests/docker/e2e.sh

# The image vpnsup:latest in a running Docker engine, from a binary built here (target prebuilt);
# `docker build -t vpnsup .` builds it in the Swift image instead.
image: deps
	SWIFT=$(SWIFT) bash scripts/build-static.sh
	bash scripts/debian-base-image.sh
	docker build --target prebuilt -t vpnsup .

# The static release binary (dist/vpnsup), vpnsup-netns and the systemd units, the docs the units
# name. With another PREFIX the units are rewritten to name the installed paths.
install: deps-build
	SWIFT=$(SWIFT) bash scripts/build-static.sh
	install -D -m 0755 dist/vpnsup $(DESTDIR)$(PREFIX)/bin/vpnsup
	install -D -m 0755 packaging/systemd/vpnsup-netns $(DESTDIR)$(PREFIX)/lib/vpnsup/vpnsup-netns
	install -d $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)$(PREFIX)/share/doc/vpnsup
	for unit in vpnsup@.service vpnsup-netns@.service; do \
		sed 's,/usr/local/,$(PREFIX)/,g' packaging/systemd/$$unit >$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit && \
		chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit || exit 1; \
	done
	install -m 0644 docs/operations.md docs/configuration.md packaging/systemd/example.env $(DESTDIR)$(PREFIX)/share/doc/vpnsup/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/vpnsup $(DESTDIR)$(PREFIX)/lib/vpnsup/vpnsup-netns \
		$(DESTDIR)$(SYSTEMD_UNIT_DIR)/vpnsup@.service $(DESTDIR)$(SYSTEMD_UNIT_DIR)/vpnsup-netns@.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/vpnsup
	-rmdir $(DESTDIR)$(PREFIX)/lib/vpnsup

# Only the namespace lab's end-to-end tests (needs `make build` first).
lab-test: build
	VPNSUP=$(VPNSUP) bash Tests/lab/e2e.sh
	VPNSUP=$(VPNSUP) bash Tests/lab/metrics.sh

# Builds, starts the namespace lab, routes a client through vpnsup, shows status, tears down.
demo: deps-demo build
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
bench:
	@bash scripts/install-deps.sh bench
	SWIFT=$(SWIFT) bash bench/run.sh

clean:
	rm -rf .build .build-static .build-fuzz dist
