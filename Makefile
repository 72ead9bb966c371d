# The README's commands. Everything real lives in CMake; this file only strings steps together.
#   make run     install what is missing, build, start a single-member batond
#   make test    install what is missing, build (gcc + ASan/UBSan, and clang), run every test
.PHONY: all deps build build-asan build-clang test fuzz run cluster cluster-stop chaos-short chaos chaos-calibrate bench bench-single clean format

JOBS    ?= $(shell nproc)
MAKEFLAGS += --no-print-directory
RELEASE := build/release
ASAN    := build/asan
CLANG   := build/clang

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(RELEASE) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(RELEASE) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DBATON_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN) -j $(JOBS)

# clang must compile the tree warning-free too; it also builds the libFuzzer targets.
build-clang: deps
	@CC=clang cmake -S . -B $(CLANG) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBATON_FUZZ=ON >/dev/null
	@cmake --build $(CLANG) -j $(JOBS)

# Bounded fuzzing first (clang build), then the whole suite under ASan + UBSan, whose summary
# is the closing line.
test: build build-clang build-asan
	@ctest --test-dir $(CLANG) --output-on-failure -L fuzz --no-tests=ignore
	@ctest --test-dir $(ASAN) --output-on-failure -j $(JOBS) --timeout 900

# Long fuzzing runs from random seeds: make fuzz FUZZ_SECONDS=3600 (FUZZ_SEED=n replays one)
fuzz: build-clang
	@FUZZ_SEED=$${FUZZ_SEED:-0} FUZZ_SECONDS=$${FUZZ_SECONDS:-600} ctest --test-dir $(CLANG) --output-on-failure -L fuzz

# A single member with its default data directory (./default.baton) and etcd's default ports.
run: build
	@exec $(RELEASE)/src/cmd/batond/batond $(ARGS)

# Three members on loopback in the background (clients on 12379, 22379, 32379).
cluster: build
	@scripts/cluster.sh start

cluster-stop:
	@scripts/cluster.sh stop

# Jepsen-style runs on real clusters in network namespaces (root); see tests/chaos/README.md.
CHAOS_SERVER ?= $(RELEASE)/src/cmd/batond/batond
CHAOS_REFERENCE ?= /usr/bin/etcd
DURATION ?= 600
SEED ?= $(shell date +%s)
NODES ?= 3
chaos-short: build
	@tests/chaos/run.sh --server $(CHAOS_SERVER) --duration 150 --seed 1 \
	  --checker $(RELEASE)/tests/chaos/chaos_check
chaos: build
	@tests/chaos/run.sh --server $(CHAOS_SERVER) --duration $(DURATION) --seed $(SEED) \
	  --nodes $(NODES) --checker $(RELEASE)/tests/chaos/chaos_check
chaos-calibrate: build
	@tests/chaos/calibrate.sh --server $(CHAOS_REFERENCE) --checker $(RELEASE)/tests/chaos/chaos_check

# batond against etcd 3.4 on loopback (release build), same workloads, medians over rounds;
# ~10 min by default. BENCH_ARGS="--rounds 1 --duration 2" shortens it; SAVE=1 writes
# bench/results/<date>.md. bench-single: one member each.
BENCH_ARGS ?=
bench: build
	@scripts/bench.py --members 3 $(BENCH_ARGS)
bench-single: build
	@scripts/bench.py --members 1 $(BENCH_ARGS)

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf build
