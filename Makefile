# moonhive — build, run, test, bench, sanitize, deps, install.
#
# `make` builds ./moonhive; `make run` and `make test` first install any missing
# Debian packages (scripts/deps.sh), so a fresh Debian 12 machine needs nothing else.

PREFIX    ?= /usr/local
CC        ?= cc
BUILD     ?= build/release
PKGS      := lua5.4 libuv libcurl readline lua5.4-cjson sqlite3 libcrypto
VERSION   := 0.1.0

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wwrite-strings -Werror
CFLAGS    ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -DMH_VERSION='"$(VERSION)"' $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) \
             -MMD -MP -Ihost $(shell pkg-config --cflags-only-I $(PKGS) 2>/dev/null)
LDLIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm -lutil

ifeq ($(SANITIZE),1)
BUILD        := build/sanitize
EXTRA_CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DMH_STACK_CHECKS
LDFLAGS      += -fsanitize=address,undefined
endif
ifeq ($(DEBUG),1)
EXTRA_CFLAGS += -DMH_STACK_CHECKS
endif

HOST_SRC  := $(wildcard host/*.c)
HOST_OBJ  := $(HOST_SRC:%.c=$(BUILD)/%.o)
LIB_OBJ   := $(filter-out $(BUILD)/host/main.o,$(HOST_OBJ))
LIB       := $(BUILD)/libmoonhive.a
BIN       := $(BUILD)/moonhive

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
E2E_SRC   := $(wildcard tests/e2e/test_*.c)
E2E_BIN   := $(E2E_SRC:tests/e2e/%.c=$(BUILD)/tests/%)
TOOL_SRC  := $(wildcard tests/tools/*.c)
TOOL_BIN  := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all deps run tour test sanitize bench fuzz install clean test-build

all: deps-check moonhive

moonhive: $(BIN)
ifneq ($(SANITIZE),1)
	@cp $(BIN) moonhive.tmp && mv -f moonhive.tmp moonhive
endif

$(BIN): $(BUILD)/host/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcmocka

$(BUILD)/tests/%: tests/e2e/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS) -lcjson

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcjson

deps:
	@scripts/deps.sh install

deps-check:
	@scripts/deps.sh check-or-install

test-build: deps-check $(BIN) $(UNIT_BIN) $(E2E_BIN) $(TOOL_BIN)

# The service on the embedded defaults (SQLite in ./.moonhive, the offline
# mock model unless a provider key is set), with the shipped agents and
# workflows; it prints the dashboard's address. PORT=N picks another port.
run: all
	./moonhive serve --watch --port $(or $(PORT),8080)

tour: all
	./moonhive run examples/tour.lua

test: test-build
	@BUILD=$(BUILD) tests/run.sh

sanitize:
	@$(MAKE) --no-print-directory SANITIZE=1 test

bench: deps-check $(BIN) $(TOOL_BIN) $(BENCH_BIN)
	@BUILD=$(BUILD) bench/run.sh

# libFuzzer on the server's request path (tests/fuzz/fuzz_request.c), with
# ASan and UBSan, for FUZZ_SECONDS (default 60) from the seed corpus.
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build/fuzz
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -DMH_VERSION='"$(VERSION)"' -g -O1 -Ihost \
                $(shell pkg-config --cflags-only-I $(PKGS) 2>/dev/null) -fsanitize=fuzzer,address,undefined
fuzz: deps-check
	@mkdir -p $(FUZZ_BUILD)/corpus
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_request tests/fuzz/fuzz_request.c \
	  $(filter-out host/main.c host/cli_%.c host/repl.c,$(HOST_SRC)) $(LDLIBS)
	cp tests/fuzz/corpus/* $(FUZZ_BUILD)/corpus/
	MOONHIVE_RUNTIME=$(CURDIR)/lua MOONHIVE_STDLIB=$(CURDIR)/stdlib ASAN_OPTIONS=detect_leaks=0 \
	  $(FUZZ_BUILD)/fuzz_request -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	  $(FUZZ_BUILD)/corpus

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/moonhive/stdlib $(DESTDIR)$(PREFIX)/share/moonhive/lua \
	  $(DESTDIR)$(PREFIX)/share/moonhive/agents $(DESTDIR)$(PREFIX)/share/moonhive/workflows \
	  $(DESTDIR)$(PREFIX)/share/moonhive/testkit
	install -m 755 moonhive $(DESTDIR)$(PREFIX)/bin/moonhive
	cp -R stdlib/. $(DESTDIR)$(PREFIX)/share/moonhive/stdlib/
	cp -R lua/. $(DESTDIR)$(PREFIX)/share/moonhive/lua/
	cp -R agents/. $(DESTDIR)$(PREFIX)/share/moonhive/agents/
	cp -R workflows/. $(DESTDIR)$(PREFIX)/share/moonhive/workflows/
	cp -R testkit/. $(DESTDIR)$(PREFIX)/share/moonhive/testkit/

clean:
	rm -rf build moonhive

-include $(HOST_OBJ:.o=.d) $(BENCH_BIN:=.d) $(UNIT_BIN:=.d) $(E2E_BIN:=.d) $(TOOL_BIN:=.d)
