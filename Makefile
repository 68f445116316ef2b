# Thin wrapper over CMake presets. `make run` and `make test` are the two
# commands a new user needs; both install missing Debian packages first.
PRESET ?= release
TEST_PRESET ?= asan-ubsan
JOBS ?= $(shell nproc)
CONFIG ?= config/seckill.ini

FUZZ_SECONDS ?= 60

.PHONY: all deps build run test test-debug tsan bench fuzz package clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET) -j$(JOBS)

run: build
	@echo "seckill-gateway on http://127.0.0.1:8080 -- try:"
	@echo "  curl -i -X POST http://127.0.0.1:8080/seckill -H 'Content-Type: application/json' -d '{\"user_id\":\"u1\",\"item_id\":\"demo\"}'"
	@exec build/$(PRESET)/gateway/seckill-gateway -c $(CONFIG)

test: deps
	@cmake --preset $(TEST_PRESET) >/dev/null
	@cmake --build --preset $(TEST_PRESET) -j$(JOBS)
	@ctest --preset $(TEST_PRESET) -j$(JOBS)

tsan:
	@$(MAKE) --no-print-directory test TEST_PRESET=tsan

test-debug:
	@$(MAKE) --no-print-directory test TEST_PRESET=debug

bench: build
	@loadtest/bench.sh $(BENCH_ARGS)

# the Debian package (CPack): build/$(PRESET)/seckill-gateway_<version>_<arch>.deb
# with both programs, /etc/seckill-gateway/seckill.ini and the systemd units
package: build
	@cd build/$(PRESET) && cpack -G DEB

# every libFuzzer target for FUZZ_SECONDS each (FUZZ_TARGETS: a subset);
# installs clang and libFuzzer's runtime itself; fails when one crashes
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(FUZZ_TARGETS)

clean:
	rm -rf build
