# pgcdc -- build, test, fuzz, install.
CC ?= cc
PG_CONFIG ?= pg_config
PQ_INC := $(shell $(PG_CONFIG) --includedir 2>/dev/null || echo /usr/include/postgresql)
PQ_LIB := $(shell $(PG_CONFIG) --libdir 2>/dev/null || echo /usr/lib)
WARN = -Wall -Wextra -pedantic -Werror -Wshadow -Wstrict-prototypes \
       -Wmissing-prototypes -Wvla
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(WARN) $(CFLAGS) -I$(PQ_INC)
LDLIBS = -L$(PQ_LIB) -lpq
PREFIX ?= /usr/local
DESTDIR ?=

UNITS = sha1.c sha256.c base64.c ws.c sse.c json.c jwt.c snapshot.c grant.c query.c http.c stream.c
SRCS = pgcdc.c $(UNITS)
HDRS = pgcdc.h jwt.h
SAN = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

.PHONY: all test unit asan fuzz fuzz-replay bench clean install static demo mutants

all: pgcdc

WEB_H = web/demo.h web/pgcdc_js.h

pgcdc: $(SRCS) $(HDRS) $(WEB_H)
	$(CC) $(ALL_CFLAGS) -o $@ $(SRCS) $(LDFLAGS) $(LDLIBS)

# The demo page and the browser client are compiled into the binary.
web/demo.h: web/demo.html web/embed.sh
	sh web/embed.sh web/demo.html demo_html > $@.tmp && mv $@.tmp $@
web/pgcdc_js.h: web/pgcdc.js web/embed.sh
	sh web/embed.sh web/pgcdc.js pgcdc_js > $@.tmp && mv $@.tmp $@

# Unit tests: one binary, sanitizers on, linking the pure units only.
UNIT_SRCS = tests/unit.c tests/test_sha1.c tests/test_base64.c tests/test_ws.c \
            tests/test_json.c tests/test_query.c tests/test_stream.c \
            tests/test_sha256.c tests/test_jwt.c tests/test_snapshot.c \
            tests/test_project.c tests/test_http.c tests/test_sse.c \
            tests/test_grant.c
tests/unit: $(UNIT_SRCS) $(UNITS) $(HDRS) tests/t.h tests/jwt_vectors.h
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -Itests -I. -o $@ $(UNIT_SRCS) $(UNITS) $(LDFLAGS)

unit: tests/unit
	./tests/unit

# pgcdc with AddressSanitizer, LeakSanitizer and UBSan (tests/leaks.sh).
asan: build/pgcdc-asan
build/pgcdc-asan: $(SRCS) $(HDRS) $(WEB_H)
	@mkdir -p build
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -o $@ $(SRCS) $(LDFLAGS) $(LDLIBS)

test: pgcdc
	./test.sh

clean:
	rm -f pgcdc tests/unit $(WEB_H)
	rm -rf build

UNITDIR ?= $(PREFIX)/lib/systemd/system
install: pgcdc
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/pgcdc/docs $(DESTDIR)$(UNITDIR)
	install -m 755 pgcdc $(DESTDIR)$(PREFIX)/bin/pgcdc
	install -m 644 pgcdc.example.config README.md dist/nginx.conf dist/Caddyfile \
	    dist/haproxy.cfg $(DESTDIR)$(PREFIX)/share/doc/pgcdc/
	install -m 644 docs/protocol.md $(DESTDIR)$(PREFIX)/share/doc/pgcdc/docs/
	sed -e 's|^ExecStart=/usr/local/|ExecStart=$(PREFIX)/|' \
	    -e 's|^Documentation=file:/usr/local/|Documentation=file:$(PREFIX)/|' \
	    dist/pgcdc.service > $(DESTDIR)$(UNITDIR)/pgcdc.service
	chmod 644 $(DESTDIR)$(UNITDIR)/pgcdc.service

# Fully static binary: libpq rebuilt without GSSAPI/LDAP by dist/static-libpq.sh
# (static headers first on the include path).
STATIC_PQ = build/libpq-static
static: $(SRCS) $(HDRS) $(WEB_H)
	sh dist/static-libpq.sh
	$(CC) -I$(STATIC_PQ)/include $(ALL_CFLAGS) -static -o pgcdc $(SRCS) $(LDFLAGS) \
	    $(STATIC_PQ)/lib/libpq.a $(STATIC_PQ)/lib/libpgcommon_shlib.a \
	    $(STATIC_PQ)/lib/libpgport_shlib.a -lssl -lcrypto

# Builds and runs pgcdc against a throwaway local database (Ctrl-C ends it).
demo:
	bash web/demo.sh

# The fuzz targets: tests/fuzz/fuzz_T.c with the units it exercises, built
# with clang and libFuzzer (build/fuzz/fuzz_T) or, to replay the committed
# corpus without libFuzzer, with gcc around tests/fuzz/replay.c
# (build/fuzz/replay_T); ASan and UBSan in both.  tests/fuzz.sh runs them.
FUZZ_UNITS_ws = ws.c base64.c sha1.c
FUZZ_UNITS_sse = sse.c
FUZZ_UNITS_json = json.c
FUZZ_UNITS_query = query.c json.c
FUZZ_UNITS_http = http.c query.c json.c
FUZZ_UNITS_request = http.c query.c json.c grant.c sha1.c base64.c
FUZZ_UNITS_jwt = jwt.c sha256.c sha1.c base64.c json.c
FUZZ_UNITS_jwks = $(FUZZ_UNITS_jwt)
FUZZ_UNITS_snapshot = snapshot.c query.c json.c
FUZZ_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 \
              -fno-omit-frame-pointer -fno-sanitize-recover=all -I.
.SECONDEXPANSION:
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $$(FUZZ_UNITS_$$*) $(HDRS)
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_UNITS_$*)
build/fuzz/replay_%: tests/fuzz/replay.c tests/fuzz/fuzz_%.c $$(FUZZ_UNITS_$$*) $(HDRS)
	@mkdir -p build/fuzz
	gcc $(FUZZ_CFLAGS) -fsanitize=address,undefined -o $@ tests/fuzz/replay.c tests/fuzz/fuzz_$*.c $(FUZZ_UNITS_$*)

# The load generator of the benchmarks; `make bench` runs bench/run.sh.
build/wsload: bench/wsload.c
	@mkdir -p build
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(WARN) -O2 -o $@ bench/wsload.c
bench: pgcdc build/wsload
	bash bench/run.sh

# Fuzzers (clang, libFuzzer) for the frame decoder, the SSE event framing,
# the wal2json tokenizer,
# the query parser, the HTTP request parser, and the JWT and JWKS parsers;
# FUZZ_SECONDS each.
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-300} bash tests/fuzz.sh

# Replays the committed corpus under ASan/UBSan without libFuzzer.
fuzz-replay:
	FUZZ_SECONDS=0 bash tests/fuzz.sh

# Plants each bug of the table in tests/mutants.sh in a scratch copy and runs
# the tests that must catch it, twice (slow: not part of ./test.sh).
mutants:
	bash tests/mutants.sh
