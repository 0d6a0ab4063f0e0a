# Herald — plain Makefile. `make` builds bin/, `make SAN=1` builds the
# AddressSanitizer + UBSan variant into bin-san/, `make check` runs the tests.

PKGS    := hiredis libuv libcurl jansson openssl sqlite3 libpq
CC      ?= cc
WARN    := -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wvla
ifeq ($(CI),true)
WERROR  ?= -Werror
endif
OPT     ?= -O2 -g
DEPCFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libpq and libcurl are loaded when first needed (io/pqlib.h,
# io/curllib.h: ~3.6 MB of resident memory a worker does not carry on
# SQLite and without Sent-folder copies), so programs link neither; only
# heraldctl (the scheme test's IMAP step) and test_mc (it talks to its
# PostgreSQL itself) link one, through EXTRA_LIBS.
LINKPKGS  := $(filter-out libcurl libpq,$(PKGS))
DEPLIBS   := $(shell pkg-config --libs $(LINKPKGS) 2>/dev/null) -lresolv -lm
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(WERROR) -MMD -MP \
             -Icommon -Iio -Iproducer -I$(B)/gen $(DEPCFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(LDFLAGS)

ifeq ($(SAN),1)
B       := build-san
BIN     := bin-san
OPT     := -O1 -g -fno-omit-frame-pointer
CFLAGS_ALL += -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS_ALL += -fsanitize=address,undefined
else
B       := build
BIN     := bin
endif

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
CFLAGS_ALL += -DHERALD_VERSION=\"$(VERSION)\"

COMMON_SRC   := $(wildcard common/*.c)
# what talks to the outside (stores, DNS, files): io/; linked with common/
IO_SRC       := $(wildcard io/*.c)
WORKER_SRC   := $(wildcard worker/*.c)
LIB_SRC      := $(wildcard producer/lib*.c)
ENQ_SRC      := $(wildcard producer/enqueue*.c)
CTL_SRC      := $(wildcard producer/ctl*.c)
API_SRC      := $(wildcard api/*.c)
# herald-api alone links libmicrohttpd
API_CFLAGS   := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
API_LIBS     := $(shell pkg-config --libs libmicrohttpd 2>/dev/null) -lpthread
UNIT_SRC     := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(B)/%.o,$(1))

# Redis scripts: redis/*.lua (redis/lib/ taken in by "--! include")
# become $(B)/gen/rscript_table.c and rscript_ids.h (common/rscript.h),
# and the expanded texts the tests load, $(B)/gen/redis/*.lua.
LUA_SRC := $(wildcard redis/*.lua)
GEN     := $(B)/gen

COMMON_OBJ := $(call obj,$(COMMON_SRC) $(IO_SRC)) $(GEN)/rscript_table.o
LIB_OBJ    := $(call obj,$(LIB_SRC))
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BIN)/%,$(UNIT_SRC))

PROGS := $(BIN)/herald-worker $(BIN)/herald-enqueue $(BIN)/heraldctl \
         $(BIN)/herald-api $(BIN)/libherald.a

.PHONY: all san units check test deps bench bench-fair bench-mc demo fuzz fault fmt fmt-check clean
all: $(PROGS) $(UNIT_BINS) $(BIN)/bench_mc

$(B)/%.o: %.c | $(GEN)/rscript_ids.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(GEN)/rscript_ids.h $(GEN)/rscript_table.c &: $(LUA_SRC) $(wildcard redis/lib/*.lua) scripts/embed_lua.sh
	sh scripts/embed_lua.sh $(GEN) $(LUA_SRC)

$(GEN)/rscript_table.o: $(GEN)/rscript_table.c
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(B)/libcommon.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN)/libherald.a: $(LIB_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The worker's modules but main.c, as a library: the program links it,
# and so do the unit tests of worker/ (tests/unit/test_w_*.c).
$(B)/libworker.a: $(call obj,$(filter-out worker/main.c,$(WORKER_SRC)))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN)/herald-worker: $(B)/worker/main.o $(B)/libworker.a $(B)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPLIBS) $(EXTRA_LIBS)

$(BIN)/herald-enqueue: $(call obj,$(ENQ_SRC)) $(BIN)/libherald.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPLIBS) $(EXTRA_LIBS)

$(BIN)/heraldctl: EXTRA_LIBS = $(shell pkg-config --libs libcurl 2>/dev/null)
$(BIN)/heraldctl: $(call obj,$(CTL_SRC)) $(BIN)/libherald.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPLIBS) $(EXTRA_LIBS)

$(B)/api/%.o: api/%.c | $(GEN)/rscript_ids.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iapi $(API_CFLAGS) -c $< -o $@

# the console's files, taken in by .incbin (unseen by -MMD)
$(B)/api/console.o: api/console/index.html api/console/console.css \
                    api/console/console.js

$(BIN)/herald-api: $(call obj,$(API_SRC)) $(BIN)/libherald.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPLIBS) $(EXTRA_LIBS) $(API_LIBS)

$(BIN)/test_%: $(B)/tests/unit/test_%.o $(BIN)/libherald.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPLIBS) $(EXTRA_LIBS)

$(BIN)/test_w_%: $(B)/tests/unit/test_w_%.o $(B)/libworker.a $(BIN)/libherald.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPLIBS) $(EXTRA_LIBS)

$(BIN)/test_mc: EXTRA_LIBS = $(shell pkg-config --libs libpq 2>/dev/null)

# the SPF evaluator's DNS double (tests/spf_zone.c) is the unit test's alone
$(BIN)/test_spf: $(B)/tests/spf_zone.o

# tests/unit/bench_mc.c: the Message Center's write path alone (a
# benchmark, not a test; `make bench-mc` runs it).
$(BIN)/bench_mc: $(B)/tests/unit/bench_mc.o $(BIN)/libherald.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEPLIBS) $(EXTRA_LIBS)

san:
	$(MAKE) SAN=1 all

# The unit tests alone (this build), each a program that ends with
# "NAME: N passed, N failed" and exits non-zero on a failure.
units: $(UNIT_BINS)
	@rc=0; for t in $(UNIT_BINS); do $$t || rc=1; done; exit $$rc

bench-mc: $(BIN)/bench_mc
	$(BIN)/bench_mc

deps:
	@scripts/deps.sh

# The README's test command: installs what is missing, builds both
# variants, runs unit and integration tests.
check test:
	@scripts/test.sh

# The README's first command: a real worker, real Redis, a local SMTP
# catcher, a handful of real jobs, and the Message Center.
demo:
	@scripts/demo.sh

bench:
	@scripts/deps.sh
	$(MAKE) all
	@/usr/bin/python3 scripts/bench.py
bench-api:
	@scripts/deps.sh
	$(MAKE) all
	@/usr/bin/python3 scripts/bench_api.py
bench-fair:
	@scripts/deps.sh
	$(MAKE) all
	@/usr/bin/python3 scripts/bench_fair.py

# libFuzzer targets (clang), FUZZ_SECONDS each (default 20); not part of
# `make check`. See docs/fuzz.md.
fuzz:
	@scripts/deps.sh
	bash scripts/fuzz.sh

# The fault-injection suite in full (tests/fault/run.py; `make check` runs
# its reduced form): killed workers, a killed Redis, misbehaving SMTP
# servers, quotas reached mid-run; every job accounted for.
fault:
	@scripts/deps.sh
	bash scripts/fault.sh --full

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

fmt-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-san bin bin-san

-include $(shell find build build-san -name '*.d' 2>/dev/null)
.PRECIOUS: $(B)/%.o $(B)/tests/unit/%.o
