# jobd - see README.md. `make run` and `make test` are all a newcomer needs.
.DELETE_ON_ERROR:
.SUFFIXES:
.PHONY: all run test unit integration asan tsan bench clean install deps deps-test valgrind

PREFIX  ?= /usr/local
VARIANT ?= release
CC      ?= cc
PKGS    := libmicrohttpd libcjson sqlite3 libuv libcurl libcrypto

# Debian packages: what building needs, and what the tests add.
DEPS_BUILD := build-essential pkg-config libmicrohttpd-dev libcjson-dev libsqlite3-dev libuv1-dev \
              libcurl4-openssl-dev libssl-dev
# node and npm run the OpenAPI validator of tests/docs and, with chromium, the
# dashboard's browser tests (tests/browser); node and npm are each skipped when a
# command of that name exists (NodeSource's nodejs bundles npm and conflicts
# with Debian's npm package).
DEPS_TEST  := python3 python3-pytest python3-pytest-xdist python3-requests python3-jsonschema wrk curl valgrind prometheus \
              $(if $(shell command -v node 2>/dev/null),,nodejs) $(if $(shell command -v npm 2>/dev/null),,npm) \
              chromium
# clang and its libFuzzer runtime build the fuzz variant (`make fuzz`; Debian 12's clang is 14).
DEPS_FUZZ  := clang libclang-rt-14-dev

WARN    := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wmissing-prototypes \
           -Wstrict-prototypes -Wno-unused-parameter
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm -ldl

ifeq ($(VARIANT),release)
  VFLAGS := -O2 -g
else ifeq ($(VARIANT),debug)
  VFLAGS := -O0 -g3
else ifeq ($(VARIANT),asan)
  VFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(VARIANT),tsan)
  VFLAGS := -O1 -g -fsanitize=thread -fno-omit-frame-pointer
else ifeq ($(VARIANT),fuzz)
  # libFuzzer (tests/fuzz): every object instrumented for coverage; the
  # targets link the fuzzer's own main with -fsanitize=fuzzer.
  FUZZ_CC ?= clang
  override CC := $(FUZZ_CC)
  VFLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
  $(error unknown VARIANT $(VARIANT): release, debug, asan, tsan or fuzz)
endif

OBJDIR  := build/$(VARIANT)
LIB_SRC := $(wildcard common/*.c storage/*.c tasks/*.c executors/*.c core/*.c) \
           $(filter-out server/main.c,$(wildcard server/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(OBJDIR)/%.o) $(OBJDIR)/gen/openapi_json.o $(OBJDIR)/gen/web_assets.o
MAIN_OBJ := $(OBJDIR)/server/main.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(OBJDIR)/tests/%)
BIN     := $(OBJDIR)/jobd
# The example plugin, and the broken plugins test_tasks_extra loads on purpose.
PLUGIN_SO  := $(OBJDIR)/examples/hello.so
FIXTURE_SO := $(patsubst %,$(OBJDIR)/tests/plugins/%.so,nover badver noinit initfail dup)
# Fuzz targets (tests/fuzz): libFuzzer binaries in build/fuzz/fuzz/ (VARIANT=fuzz),
# and in every other variant the same targets with tests/fuzz/replay.c as main(),
# which `make fuzz-regress` (and so `make test`) runs on the corpus and regressions.
FUZZ_TARGETS := fuzz_job_spec fuzz_config fuzz_worker_wire fuzz_router
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_SEED ?=
FUZZ_OBJ   := $(FUZZ_TARGETS:%=$(OBJDIR)/tests/fuzz/%.o)
FUZZ_BIN   := $(FUZZ_TARGETS:%=$(OBJDIR)/fuzz/%)
REPLAY_BIN := $(if $(filter fuzz,$(VARIANT)),,$(FUZZ_TARGETS:%=$(OBJDIR)/replay/%))
# fuzz_config wraps fopen() so that no input makes it read a FIFO or a terminal.
fuzz_link = $(if $(filter fuzz_config,$(1)),-Wl$(comma)--wrap=fopen)
comma := ,
# Made by the pattern rules below only: keep them, or every make would relink.
.SECONDARY: $(FUZZ_OBJ) $(OBJDIR)/tests/fuzz/replay.o

all: build/jobd
	@$(MAKE) --no-print-directory VARIANT=release build/release/examples/hello.so

# build/jobd is the release binary; sanitizer variants live in their own folders.
.PHONY: build/jobd
build/jobd:
	@$(MAKE) --no-print-directory VARIANT=release build/release/jobd
	@cp -p build/release/jobd build/jobd.tmp && mv -f build/jobd.tmp build/jobd

# V=1 shows the full command lines.
Q := $(if $(V),,@)

$(BIN): $(LIB_OBJ) $(MAIN_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(VFLAGS) -o $@ $^ $(PKG_LIBS)

$(OBJDIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(WARN) $(VFLAGS) $(PKG_CFLAGS) -MMD -MP -c -o $@ $<

$(OBJDIR)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  CC+LD   $@"
	$(Q)$(CC) $(WARN) -Wno-missing-prototypes $(VFLAGS) $(PKG_CFLAGS) -MMD -MP -o $@ $< $(LIB_OBJ) $(PKG_LIBS)

# docs/openapi.json, compiled in for GET /v1/openapi.json (server/openapi.c):
# a byte array written with od and sed, so building needs only coreutils.
$(OBJDIR)/gen/openapi_json.c: docs/openapi.json
	@mkdir -p $(dir $@)
	@echo "  GEN     $@"
	$(Q)od -A n -v -t x1 $< >$@.od
	$(Q){ printf '/* Generated from docs/openapi.json by the Makefile: do not edit. */\n#include <stddef.h>\n'; \
	  printf 'extern const unsigned char jobd_openapi_json[];\nextern const size_t jobd_openapi_json_len;\n'; \
	  printf 'const unsigned char jobd_openapi_json[] = {\n'; \
	  sed -e 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g' $@.od; \
	  printf '0x00};\nconst size_t jobd_openapi_json_len = sizeof jobd_openapi_json - 1;\n'; } >$@.tmp
	$(Q)rm -f $@.od && mv -f $@.tmp $@

$(OBJDIR)/gen/openapi_json.o: $(OBJDIR)/gen/openapi_json.c
	@echo "  CC      $@"
	$(Q)$(CC) $(WARN) $(VFLAGS) -MMD -MP -c -o $@ $<

# The dashboard (web/), compiled in for GET /, /app.js and /app.css (server/web.c):
# one byte array per file, named jobd_web_<file with . as _>, written like the above.
# app.js is made of web/js/*.js joined in name order (one script, one scope).
WEB_JS := $(sort $(wildcard web/js/*.js))
$(OBJDIR)/gen/app.js: $(WEB_JS)
	@mkdir -p $(dir $@)
	$(Q)cat $(WEB_JS) >$@.tmp && mv -f $@.tmp $@
WEB_ASSETS := web/index.html $(OBJDIR)/gen/app.js web/app.css
$(OBJDIR)/gen/web_assets.c: $(WEB_ASSETS)
	@mkdir -p $(dir $@)
	@echo "  GEN     $@"
	$(Q){ printf '/* Generated from web/ by the Makefile: do not edit. */\n#include <stddef.h>\n'; \
	  for f in $(WEB_ASSETS); do n=jobd_web_$$(basename $$f | tr . _); \
	    printf 'extern const unsigned char %s[];\nextern const size_t %s_len;\n' $$n $$n; \
	    printf 'const unsigned char %s[] = {\n' $$n; \
	    od -A n -v -t x1 $$f | sed -e 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	    printf '0x00};\nconst size_t %s_len = sizeof %s - 1;\n' $$n $$n; \
	  done; } >$@.tmp
	$(Q)mv -f $@.tmp $@

$(OBJDIR)/gen/web_assets.o: $(OBJDIR)/gen/web_assets.c
	@echo "  CC      $@"
	$(Q)$(CC) $(WARN) $(VFLAGS) -MMD -MP -c -o $@ $<

# A plugin is built the way a third party builds one: -Iinclude is its only
# include path (see include/jobd_plugin.h), libcjson its only library.
$(OBJDIR)/examples/%.so: examples/plugin/%.c
	@mkdir -p $(dir $@)
	@echo "  CC.so   $@"
	$(Q)$(CC) $(WARN) $(VFLAGS) -fPIC -shared -Iinclude -MMD -MP -o $@ $< -lcjson

$(OBJDIR)/tests/plugins/%.so: tests/unit/plugin_fixture.c
	@mkdir -p $(dir $@)
	@echo "  CC.so   $@"
	$(Q)$(CC) $(WARN) $(VFLAGS) -fPIC -shared -Iinclude -DFIXTURE_$* -MMD -MP -o $@ $< -lcjson

$(OBJDIR)/fuzz/%: $(OBJDIR)/tests/fuzz/%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(VFLAGS) -fsanitize=fuzzer,address,undefined $(call fuzz_link,$*) -o $@ $< $(LIB_OBJ) $(PKG_LIBS)

$(OBJDIR)/replay/%: $(OBJDIR)/tests/fuzz/%.o $(OBJDIR)/tests/fuzz/replay.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(VFLAGS) $(call fuzz_link,$*) -o $@ $< $(OBJDIR)/tests/fuzz/replay.o $(LIB_OBJ) $(PKG_LIBS)

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(UNIT_BIN:=.d) $(PLUGIN_SO:.so=.d) $(FIXTURE_SO:.so=.d) \
         $(FUZZ_OBJ:.o=.d) $(OBJDIR)/tests/fuzz/replay.d

# Installs what is missing (apt-get), and does nothing when everything is there.
# Only needs root when something is missing.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing; }; \
	fi
endef

deps:
	$(call apt_install,$(DEPS_BUILD))

deps-test: deps
	$(call apt_install,$(DEPS_TEST))

deps-fuzz: deps
	$(call apt_install,$(DEPS_FUZZ))

run: deps
	@$(MAKE) --no-print-directory build/jobd
	./build/jobd $(ARGS)

# test_process starts workers from this variant's jobd (../jobd from the test binary).
unit: $(BIN) $(UNIT_BIN) $(PLUGIN_SO) $(FIXTURE_SO) $(REPLAY_BIN)

# Runs every suite and ends with one "N passed, N failed" line summed over them.
test: deps-test
	@$(MAKE) --no-print-directory build/jobd
	@$(MAKE) --no-print-directory VARIANT=release unit
	@tests/run.sh release

# Builds the container image with podman and checks it (tests/container).
# `make test` runs it too when CI=true or podman is already set up.
.PHONY: fuzz fuzz-regress fuzz-bins deps-fuzz
# Runs each fuzz target for FUZZ_SECONDS (default 60) on a scratch copy of its
# corpus (tests/fuzz/corpus/<target>) plus its regressions; fails on any crash,
# whose input is left in build/fuzz/crashes/<target>/ (see docs/TESTING.md).
fuzz: deps-fuzz
	@$(MAKE) --no-print-directory VARIANT=fuzz fuzz-bins
	@FUZZ_JOBS=$(FUZZ_JOBS) FUZZ_SEED=$(FUZZ_SEED) tests/fuzz/run.sh fuzz build/fuzz $(FUZZ_SECONDS)

fuzz-bins: $(FUZZ_BIN)

# Runs every corpus and regression input once through each target: with the
# libFuzzer binaries for VARIANT=fuzz, else with the replay builds (no clang).
fuzz-regress: $(if $(filter fuzz,$(VARIANT)),$(FUZZ_BIN),$(REPLAY_BIN))
	@tests/fuzz/run.sh replay $(OBJDIR)

.PHONY: test-container
test-container: build/jobd
	@tests/container/test_container.sh

asan: deps-test
	@$(MAKE) --no-print-directory VARIANT=asan build/asan/jobd unit
	@tests/run.sh asan

tsan: deps-test
	@$(MAKE) --no-print-directory VARIANT=tsan build/tsan/jobd unit
	@tests/run.sh tsan

bench: deps-test
	@$(MAKE) --no-print-directory build/jobd
	@bench/run.sh

install: build/jobd
	install -D -m 0755 build/jobd $(DESTDIR)$(PREFIX)/bin/jobd

clean:
	rm -rf build
