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
DEPS_TEST  := python3 python3-pytest python3-requests wrk curl valgrind

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
else
  $(error unknown VARIANT $(VARIANT): release, debug, asan or tsan)
endif

OBJDIR  := build/$(VARIANT)
LIB_SRC := $(wildcard common/*.c storage/*.c tasks/*.c executors/*.c core/*.c) \
           $(filter-out server/main.c,$(wildcard server/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(OBJDIR)/%.o)
MAIN_OBJ := $(OBJDIR)/server/main.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(OBJDIR)/tests/%)
BIN     := $(OBJDIR)/jobd
# The example plugin, and the broken plugins test_tasks_extra loads on purpose.
PLUGIN_SO  := $(OBJDIR)/examples/hello.so
FIXTURE_SO := $(patsubst %,$(OBJDIR)/tests/plugins/%.so,nover badver noinit initfail dup)

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

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(UNIT_BIN:=.d) $(PLUGIN_SO:.so=.d) $(FIXTURE_SO:.so=.d)

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

run: deps
	@$(MAKE) --no-print-directory build/jobd
	./build/jobd $(ARGS)

# test_process starts workers from this variant's jobd (../jobd from the test binary).
unit: $(BIN) $(UNIT_BIN) $(PLUGIN_SO) $(FIXTURE_SO)

# Runs every suite and ends with one "N passed, N failed" line summed over them.
test: deps-test
	@$(MAKE) --no-print-directory build/jobd
	@$(MAKE) --no-print-directory VARIANT=release unit
	@tests/run.sh release

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
