/* fuzz_query.c -- libFuzzer target for the subscription layer of pgcdc.c.
 *
 * The input is used twice.  First as a /ws query string: params_parse, and
 * when it yields a query, spec_parse of it with its filter= values.  Then
 * raw: its first line is a query and the following lines extra filters,
 * handed to spec_parse directly (this reaches the table-name and filter
 * grammar without needing percent-escapes).  Every spec that parses is
 * matched against a fixed set of real wal2json records.  Each line also
 * goes through num_parse/num_cmp, pos_parse and tables_allow.
 *
 * Checked besides memory safety: parameters decode to no more bytes than
 * were given and hold no NUL; a spec has types, a schema, a table, one
 * filter per filter given and a key, and parsing it again gives the same
 * key; spec_match answers 0 or 1 and a truncate record matches exactly when
 * truncate was asked; num_cmp is antisymmetric, and a number accepted
 * strictly is accepted laxly.  The first line also goes through the
 * columns= grammar (names sorted, distinct, non-empty) and, with the second
 * line, through rule_parse as a [rules] key and value; a rule that parses is
 * applied with the following lines as the claims' values, and its filters
 * must come out with exactly those values (never parsed again).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXLINES 9
#define NCOLS 32

/* A broken contract aborts, naming the check. */
#define require(c) do { if (!(c)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
    abort(); } } while (0)

static const char *const rec_text[] = {
    ("{\"action\":\"I\",\"schema\":\"public\",\"table\":\"orders\",\"columns\":["
     "{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
     "{\"name\":\"status\",\"type\":\"text\",\"value\":\"paid\"},"
     "{\"name\":\"price\",\"type\":\"numeric\",\"value\":1.50},"
     "{\"name\":\"note\",\"type\":\"text\",\"value\":null},"
     "{\"name\":\"flag\",\"type\":\"boolean\",\"value\":true},"
     "{\"name\":\"q\",\"type\":\"text\",\"value\":\"a\\\"b\\u00e9\\\\\"},"
     "{\"name\":\"we\\\"ird\",\"type\":\"integer\",\"value\":-1e-3},"
     "{\"name\":\"big\",\"type\":\"bigint\",\"value\":9007199254740993}]}"),
    ("{\"action\":\"U\",\"schema\":\"public\",\"table\":\"orders\",\"columns\":["
     "{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
     "{\"name\":\"status\",\"type\":\"text\",\"value\":\"shipped\"}],"
     "\"identity\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":1},"
     "{\"name\":\"doc\",\"type\":\"text\",\"value\":\"old\"}]}"),
    ("{\"action\":\"D\",\"schema\":\"public\",\"table\":\"orders\","
     "\"identity\":[{\"name\":\"id\",\"type\":\"integer\",\"value\":7},"
     "{\"name\":\"status\",\"type\":\"text\",\"value\":false}]}"),
    ("{\"action\":\"T\",\"schema\":\"public\",\"table\":\"orders\"}"),
};

#define NREC (sizeof rec_text / sizeof rec_text[0])

static w2j_record recs[NREC];
static w2j_col cols[NREC][NCOLS];

static void records_init(void)
{
    static int done;
    static json_tok toks[256];
    if (done)
        return;
    for (size_t i = 0; i < NREC; i++)
        require(w2j_parse(rec_text[i], strlen(rec_text[i]), toks, 256,
                          cols[i], NCOLS, &recs[i]) == JSON_OK);
    done = 1;
}

static void check_spec(const char *query, char *const *filters, unsigned nf)
{
    char err[256], err2[256];
    err[0] = 0;
    spec *sp = spec_parse(query, filters, nf, err, sizeof err);
    if (!sp) {
        require(err[0] != 0);
        return;
    }
    require(sp->types != 0 && (sp->types & ~SUB_ALL) == 0);
    require(sp->schema && sp->schema[0] && sp->table && sp->table[0]);
    require(sp->key != NULL);
    require(sp->nfilters == nf || sp->nfilters == nf + 1);
    for (unsigned i = 0; i < sp->nfilters; i++) {
        const filter *f = &sp->filters[i];
        require(f->col && f->col_len == strlen(f->col) && f->col_len > 0);
        require(f->op <= OP_IS);
        if (f->op == OP_IS)
            require(f->is <= IS_FALSE);
        else
            require(f->nvals >= 1 && (f->op == OP_IN || f->nvals == 1));
        for (unsigned k = 0; f->op != OP_IS && k < f->nvals; k++)
            require(f->vals[k].s && strlen(f->vals[k].s) == f->vals[k].n);
    }
    spec *again = spec_parse(query, filters, nf, err2, sizeof err2);
    require(again && strcmp(again->key, sp->key) == 0);
    free(again);
    for (size_t i = 0; i < NREC; i++) {
        char scratch[1024];   /* longer than every record above */
        static col_cache cc[NCOLS];
        static match_ctx mc;
        match_begin(&mc, &recs[i], scratch, sizeof scratch, cc, NCOLS);
        int m = spec_match(sp, &mc);
        require(m == 0 || m == 1);
        if (recs[i].action == 'T')
            require(m == !!(sp->types & SUB_TRUNCATE));
    }
    free(sp);
}

static void check_params(const uint8_t *data, size_t size)
{
    char *qs = malloc(size ? size : 1);
    char err[256];
    ws_params p;
    require(qs != NULL);
    if (size)
        memcpy(qs, data, size);
    if (params_parse(qs, size, &p, err, sizeof err) == 0) {
        const char *one[4] = { p.query, p.token, p.since, p.grant };
        for (int i = 0; i < 4; i++)
            require(!one[i] || strlen(one[i]) <= size);
        for (unsigned i = 0; i < p.nfilters; i++)
            require(strlen(p.filters[i]) <= size);
        if (p.query)
            check_spec(p.query, p.filters, p.nfilters);
        params_free(&p);
    } else {
        require(err[0] != 0);
    }
    free(qs);
}

static const char *const nums[] = { "0", "-1", "1.5", "1e3", "9007199254740993", "-0.001" };

static void check_line(const char *s, size_t n)
{
    decnum a, b;
    int strict = num_parse(s, n, 0, &a) == 0;
    int lax = num_parse(s, n, 1, &a) == 0;
    require(!strict || lax);
    if (lax) {
        require(num_cmp(&a, &a) == 0);
        for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
            require(num_parse(nums[i], strlen(nums[i]), 0, &b) == 0);
            int x = num_cmp(&a, &b), y = num_cmp(&b, &a);
            require((x > 0) - (x < 0) == -((y > 0) - (y < 0)));
        }
    }
    uint64_t lsn;
    uint32_t idx;
    (void)pos_parse(s, n, &lsn, &idx);
}

static void check_rules(char **lines, unsigned nl)
{
    char err[256];
    int st;
    spec *sp = spec_build("*:orders", NULL, 0, lines[0], NULL, NULL, NULL, &st, err, sizeof err);
    if (sp) {
        require(sp->ncols >= 1);
        for (unsigned i = 1; i < sp->ncols; i++)
            require(strcmp(sp->cols[i - 1], sp->cols[i]) < 0);
        for (unsigned i = 0; i < sp->ncols; i++)
            require(spec_has_col(sp, sp->cols[i], strlen(sp->cols[i])));
        free(sp);
    } else {
        require(st == 400 && err[0]);
    }
    if (nl < 2)
        return;
    rule r;
    if (rule_parse(lines[0], lines[1], &r, err, sizeof err)) {
        require(err[0] != 0);
        return;
    }
    unsigned nf = r.sp->nfilters, nv = nl - 2;
    rule_value *vals = malloc((nv ? nv : 1) * sizeof *vals);
    const rule_value **vp = malloc((nf ? nf : 1) * sizeof *vp);
    unsigned *cnt = malloc((nf ? nf : 1) * sizeof *cnt);
    require(vals && vp && cnt);
    for (unsigned i = 0; i < nv; i++) {
        vals[i].s = lines[2 + i];
        vals[i].n = strlen(lines[2 + i]);
    }
    for (unsigned i = 0; i < nf; i++) {
        require(!r.paths[i] || r.paths[i][0]);
        vp[i] = vals;
        cnt[i] = r.sp->filters[i].op == OP_IN ? nv : (nv ? 1 : 0);
        if (r.paths[i] && r.sp->filters[i].op != OP_IN && !nv)
            goto out;   /* eq needs one value: the server refuses first */
    }
    sp = spec_build("*:orders", NULL, 0, NULL, &r, vp, cnt, &st, err, sizeof err);
    if (sp) {
        require(sp->nfilters == nf && sp->ncols == r.sp->ncols);
        for (unsigned i = 0; i < nf; i++) {
            const filter *f = &sp->filters[i];
            require(f->from_rule);
            if (!r.paths[i])
                continue;
            require(f->nvals == cnt[i]);
            for (unsigned k = 0; k < f->nvals; k++)
                require(f->vals[k].n == vals[k].n && !memcmp(f->vals[k].s, vals[k].s, vals[k].n));
        }
        for (size_t i = 0; i < NREC; i++) {
            char scratch[1024];
            static col_cache cc[NCOLS];
        static match_ctx mc;
        match_begin(&mc, &recs[i], scratch, sizeof scratch, cc, NCOLS);
        int m = spec_match(sp, &mc);
            require(m == 0 || m == 1);
        }
        free(sp);
    }
out:
    free(vals);
    free(vp);
    free(cnt);
    rule_free(&r);
}

static void check_raw(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    char *lines[MAXLINES];
    unsigned nl = 0;
    require(buf != NULL);
    if (size)
        memcpy(buf, data, size);
    buf[size] = 0;
    /* one exact-size copy per line for the length-taking parsers */
    for (size_t i = 0, start = 0; i <= size; i++) {
        if (i < size && buf[i] != '\n')
            continue;
        size_t n = i - start;
        char *line = malloc(n ? n : 1);
        require(line != NULL);
        memcpy(line, buf + start, n);
        check_line(line, n);
        free(line);
        buf[i] = 0;
        if (nl < MAXLINES)
            lines[nl++] = buf + start;
        start = i + 1;
    }
    if (memchr(data, 0, size) == NULL) {
        for (unsigned i = 0; i < nl; i++) {
            (void)tables_allow(lines[i], "public", "orders");
            (void)tables_allow(lines[i], "my.schema", "t,x");
        }
        check_spec(lines[0], lines + 1, nl - 1);
        check_rules(lines, nl);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    records_init();
    check_params(data, size);
    check_raw(data, size);
    return 0;
}
