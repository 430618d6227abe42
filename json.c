/* json.c -- the JSON tokenizer and the wal2json format-version 2 reader.
 *
 * json_parse() is a resumable, allocation-free tokenizer in the style of
 * jsmn, but strict RFC 8259: string escapes (including the four hex digits
 * of \uXXXX) are checked, raw control characters inside strings are refused,
 * numbers follow -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, and only
 * true/false/null are literals.  Strings are not checked for valid UTF-8:
 * their bytes are passed through untouched.  Containers nest at most
 * JSON_MAX_DEPTH deep.
 *
 * Token conventions: tokens appear in document order, so their start
 * offsets strictly increase; parent is the index of the enclosing object or
 * array (-1 for the top-level value), for a member value as well as for its
 * key; an object's size counts its keys, an array's its elements.
 *
 * Resuming: every byte is looked at once.  When the input ends inside a
 * token, that token is already in toks[] (its end not yet set) and the lexer
 * state is kept in p->expect, so the next call goes on from p->pos.  The
 * caller must pass the same toks[] again.  A number touching the end of the
 * input is reported as partial since more digits may follow.
 *
 * w2j_parse() reads the members pgcdc needs from one record; see pgcdc.h.
 * A recognised member ("action", "xid", "lsn", "nextlsn", "schema", "table",
 * "columns", "identity", and a column's "name", "type", "value") given twice
 * makes the record invalid: clients parse the forwarded bytes themselves and
 * must not be able to see a different value than the filter did.
 */
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "pgcdc.h"

#define JSON_MAX_DEPTH 64

/* Lexer states kept in json_parser.expect.  The first group waits for a
 * structural character; the rest are inside a scalar token, which is always
 * toks[next - 1]. */
enum {
    ST_VALUE,           /* a value: top level, after ':', after ',' in [] */
    ST_VALUE_OR_END,    /* just after '[' */
    ST_KEY,             /* after ',' in {} */
    ST_KEY_OR_END,      /* just after '{' */
    ST_COLON,
    ST_COMMA_OR_END,
    ST_DONE,            /* top-level value complete: whitespace only */
    ST_STR, ST_ESC,     /* in a string, after a backslash */
    ST_U1, ST_U2, ST_U3, ST_U4, /* hex digits of \u still expected */
    ST_LIT,             /* in true/false/null */
    ST_MINUS, ST_ZERO, ST_INT, ST_DOT, ST_FRAC, ST_E, ST_ESIGN, ST_EXP,
    ST_ERROR            /* sticky: the input was malformed */
};
#define KEY_FLAG 0x80   /* with ST_STR..ST_U4: the string is an object key */

static const char *const literal[] = {
    [JSON_TRUE] = "true", [JSON_FALSE] = "false", [JSON_NULL] = "null"
};

void json_init(json_parser *p)
{
    p->pos = 0;
    p->next = 0;
    p->super = -1;
    p->expect = ST_VALUE;
    p->done = 0;
}

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Containers currently open above super (super itself included). */
static int depth(const json_tok *toks, int32_t super)
{
    int d = 0;
    for (; super >= 0 && d <= JSON_MAX_DEPTH; super = toks[super].parent)
        d++;
    return d;
}

/* Claims the next token slot, counting it in its container when it is an
 * array element or an object key.  Returns its index or -1 when full. */
static int32_t tok_new(json_parser *p, json_tok *toks, unsigned ntoks,
                       uint8_t type, uint32_t start, int is_key)
{
    if (p->next >= ntoks)
        return -1;
    json_tok *t = &toks[p->next];
    t->type = type;
    t->start = start;
    t->end = 0;
    t->size = 0;
    t->parent = p->super;
    if (p->super >= 0 && (is_key || toks[p->super].type == JSON_ARRAY))
        toks[p->super].size++;
    return (int32_t)p->next++;
}

/* State after a complete value. */
static uint8_t after_value(const json_parser *p)
{
    return p->super < 0 ? ST_DONE : ST_COMMA_OR_END;
}

/* Starts the value whose first byte is c at pos.  Returns the next state,
 * ST_ERROR for a byte that cannot start a value, or 0xff when out of
 * tokens. */
static uint8_t value_start(json_parser *p, json_tok *toks, unsigned ntoks,
                           unsigned char c, uint32_t pos, int is_key)
{
    uint8_t type, st;
    uint32_t start = pos;

    if (is_key && c != '"')
        return ST_ERROR;
    switch (c) {
    case '{': type = JSON_OBJECT; st = ST_KEY_OR_END; break;
    case '[': type = JSON_ARRAY; st = ST_VALUE_OR_END; break;
    case '"':
        type = JSON_STRING; start = pos + 1;
        st = (uint8_t)(ST_STR | (is_key ? KEY_FLAG : 0));
        break;
    case '-': type = JSON_NUMBER; st = ST_MINUS; break;
    case '0': type = JSON_NUMBER; st = ST_ZERO; break;
    case 't': type = JSON_TRUE; st = ST_LIT; break;
    case 'f': type = JSON_FALSE; st = ST_LIT; break;
    case 'n': type = JSON_NULL; st = ST_LIT; break;
    default:
        if (c < '1' || c > '9')
            return ST_ERROR;
        type = JSON_NUMBER; st = ST_INT;
    }
    if ((type == JSON_OBJECT || type == JSON_ARRAY) &&
        depth(toks, p->super) >= JSON_MAX_DEPTH)
        return ST_ERROR;
    int32_t i = tok_new(p, toks, ntoks, type, start, is_key);
    if (i < 0)
        return 0xff;
    if (type == JSON_OBJECT || type == JSON_ARRAY)
        p->super = i;
    return st;
}

/* Closes the open container with c ('}' or ']') at pos. */
static uint8_t close_container(json_parser *p, json_tok *toks,
                               unsigned char c, uint32_t pos)
{
    json_tok *t = &toks[p->super];
    if (t->type != (c == '}' ? JSON_OBJECT : JSON_ARRAY))
        return ST_ERROR;
    t->end = pos + 1;
    p->super = t->parent;
    return after_value(p);
}

/* Next state of a number after byte c, or ST_DONE when c ends it (c is then
 * not part of the number), or ST_ERROR. */
static uint8_t number_step(uint8_t st, unsigned char c)
{
    int digit = c >= '0' && c <= '9';
    int e = c == 'e' || c == 'E';

    switch (st) {
    case ST_MINUS: return c == '0' ? ST_ZERO : digit ? ST_INT : ST_ERROR;
    case ST_ZERO: return c == '.' ? ST_DOT : e ? ST_E : ST_DONE;
    case ST_INT: return digit ? ST_INT : c == '.' ? ST_DOT : e ? ST_E : ST_DONE;
    case ST_DOT: return digit ? ST_FRAC : ST_ERROR;
    case ST_FRAC: return digit ? ST_FRAC : e ? ST_E : ST_DONE;
    case ST_E: return digit ? ST_EXP : (c == '+' || c == '-') ? ST_ESIGN : ST_ERROR;
    case ST_ESIGN: return digit ? ST_EXP : ST_ERROR;
    default: return digit ? ST_EXP : ST_DONE;   /* ST_EXP */
    }
}

int json_parse(json_parser *p, const char *buf, size_t len,
               json_tok *toks, unsigned ntoks)
{
    if (len > UINT32_MAX || len < p->pos)
        p->expect = ST_ERROR;
    if (p->expect == ST_ERROR)
        return JSON_INVALID;
    if (ntoks > INT32_MAX)
        ntoks = INT32_MAX;

    const unsigned char *s = (const unsigned char *)buf;
    uint32_t pos = p->pos, n = (uint32_t)len;
    uint8_t st = p->expect;

    while (pos < n) {
        unsigned char c = s[pos];
        uint8_t key = st & KEY_FLAG, ns;
        json_tok *t;

        switch (st & (uint8_t)~KEY_FLAG) {
        case ST_STR:
            /* The hot loop: most bytes of a record are string contents. */
            while (c != '"' && c != '\\' && c >= 0x20) {
                if (++pos == n)
                    goto out;
                c = s[pos];
            }
            if (c < 0x20)
                goto invalid;
            if (c == '\\') {
                st = (uint8_t)(ST_ESC | key);
            } else {
                toks[p->next - 1].end = pos;
                st = key ? ST_COLON : after_value(p);
            }
            pos++;
            break;
        case ST_ESC:
            if (c == 'u')
                st = (uint8_t)(ST_U4 | key);
            else if (c == '"' || c == '\\' || c == '/' || c == 'b' ||
                     c == 'f' || c == 'n' || c == 'r' || c == 't')
                st = (uint8_t)(ST_STR | key);
            else
                goto invalid;
            pos++;
            break;
        case ST_U1: case ST_U2: case ST_U3: case ST_U4:
            if (!is_hex(c))
                goto invalid;
            st = (st & (uint8_t)~KEY_FLAG) == ST_U1 ? (uint8_t)(ST_STR | key)
                                                    : (uint8_t)(st - 1);
            pos++;
            break;
        case ST_LIT: {
            t = &toks[p->next - 1];
            const char *lit = literal[t->type];
            uint32_t k = pos - t->start;
            if (c != (unsigned char)lit[k])
                goto invalid;
            pos++;
            if (lit[k + 1] == '\0') {
                t->end = pos;
                st = after_value(p);
            }
            break;
        }
        case ST_MINUS: case ST_ZERO: case ST_INT: case ST_DOT:
        case ST_FRAC: case ST_E: case ST_ESIGN: case ST_EXP:
            st = number_step(st, c);
            if (st == ST_ERROR)
                goto invalid;
            if (st == ST_DONE) {
                /* c belongs to whatever follows the number. */
                toks[p->next - 1].end = pos;
                st = after_value(p);
            } else {
                pos++;
            }
            break;
        default:
            if (is_ws(c)) {
                pos++;
                break;
            }
            switch (st) {
            case ST_DONE:
                goto invalid;
            case ST_COLON:
                if (c != ':')
                    goto invalid;
                st = ST_VALUE;
                pos++;
                continue;
            case ST_COMMA_OR_END:
                if (c == ',')
                    st = toks[p->super].type == JSON_OBJECT ? ST_KEY : ST_VALUE;
                else if (c == '}' || c == ']')
                    st = close_container(p, toks, c, pos);
                else
                    goto invalid;
                break;
            case ST_KEY_OR_END:
            case ST_VALUE_OR_END:
                if (c == '}' || c == ']') {
                    st = close_container(p, toks, c, pos);
                    break;
                }
                /* fall through */
            default:
                ns = value_start(p, toks, ntoks, c, pos,
                                 st == ST_KEY || st == ST_KEY_OR_END);
                if (ns == 0xff) {
                    /* Nothing consumed: a larger toks[] may retry. */
                    p->pos = pos;
                    p->expect = st;
                    return JSON_NOMEM;
                }
                st = ns;
            }
            if (st == ST_ERROR)
                goto invalid;
            pos++;
        }
    }
out:
    p->pos = pos;
    p->expect = st;
    if (st != ST_DONE)
        return JSON_PARTIAL;
    p->done = 1;
    return (int)p->next;
invalid:
    p->pos = pos;
    p->expect = ST_ERROR;
    return JSON_INVALID;
}

/* ==== escapes ============================================================ */

static unsigned hex4(const char *s)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)s[i];
        v = v << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static int hex4_ok(const char *s, size_t n, size_t i)
{
    return i + 4 <= n && is_hex((unsigned char)s[i]) &&
           is_hex((unsigned char)s[i + 1]) && is_hex((unsigned char)s[i + 2]) &&
           is_hex((unsigned char)s[i + 3]);
}

/* Decodes the escape at s[*i] (a backslash) into out.  Advances *i past it
 * and returns the bytes written (1 to 4), or -1 when it is invalid. */
static int esc_decode(const char *s, size_t n, size_t *i, unsigned char out[4])
{
    size_t k = *i + 1;
    if (k >= n)
        return -1;
    char c = s[k];
    const char *simple = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *hit = c ? strchr(simple, c) : NULL;
    if (hit) {
        out[0] = (unsigned char)to[hit - simple];
        *i = k + 1;
        return 1;
    }
    if (c != 'u' || !hex4_ok(s, n, k + 1))
        return -1;
    unsigned cp = hex4(s + k + 1);
    k += 5;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return -1;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        /* A high surrogate must be followed by an escaped low one. */
        if (k + 6 > n || s[k] != '\\' || s[k + 1] != 'u' || !hex4_ok(s, n, k + 2))
            return -1;
        unsigned lo = hex4(s + k + 2);
        if (lo < 0xDC00 || lo > 0xDFFF)
            return -1;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        k += 6;
    }
    *i = k;
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

long json_unescape(const char *s, size_t n, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < n) {
        const char *bs = memchr(s + i, '\\', n - i);
        size_t run = bs ? (size_t)(bs - (s + i)) : n - i;
        if (run > cap - o)
            return -1;
        memcpy(out + o, s + i, run);
        o += run;
        i += run;
        if (!bs)
            break;
        unsigned char u[4];
        int k = esc_decode(s, n, &i, u);
        if (k < 0 || (size_t)k > cap - o)
            return -1;
        memcpy(out + o, u, (size_t)k);
        o += (size_t)k;
    }
    return (long)o;
}

int json_str_eq(slice s, const char *raw, size_t rawlen)
{
    size_t i = 0, o = 0;
    /* most names carry no escape: then the bytes are the value */
    if (!memchr(s.p, '\\', s.n))
        return s.n == rawlen && memcmp(s.p, raw, rawlen) == 0;
    while (i < s.n) {
        if (s.p[i] != '\\') {
            if (o == rawlen || s.p[i] != raw[o])
                return 0;
            i++;
            o++;
            continue;
        }
        unsigned char u[4];
        int k = esc_decode(s.p, s.n, &i, u);
        if (k < 0 || (size_t)k > rawlen - o || memcmp(raw + o, u, (size_t)k))
            return 0;
        o += (size_t)k;
    }
    return o == rawlen;
}

/* ==== LSN ================================================================ */

/* Parses 1 to 8 hex digits from s[*i] up to stop; returns -1 if there are
 * none, too many, or a non-hex byte. */
static int hex_half(const char *s, size_t *i, size_t stop, uint32_t *v)
{
    size_t start = *i;
    *v = 0;
    for (; *i < stop && is_hex((unsigned char)s[*i]); (*i)++) {
        unsigned char c = (unsigned char)s[*i];
        *v = *v << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
        if (*i - start == 8)
            return -1;
    }
    return *i > start ? 0 : -1;
}

int lsn_parse(const char *s, size_t n, uint64_t *lsn)
{
    size_t i = 0;
    uint32_t hi, lo;
    if (hex_half(s, &i, n, &hi) < 0 || i >= n || s[i] != '/')
        return -1;
    i++;
    if (hex_half(s, &i, n, &lo) < 0 || i != n)
        return -1;
    *lsn = (uint64_t)hi << 32 | lo;
    return 0;
}

/* ==== wal2json records =================================================== */

/* Index of the first token after toks[i] and everything inside it.  Tokens
 * are in document order, so it is the first one starting at or after the
 * end of toks[i]: a binary search, never a rescan. */
static int skip(const json_tok *toks, int ntok, int i)
{
    if (toks[i].type != JSON_OBJECT && toks[i].type != JSON_ARRAY)
        return i + 1;
    int lo = i + 1, hi = ntok;
    uint32_t end = toks[i].end;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (toks[mid].start < end)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static slice tok_slice(const char *buf, const json_tok *t)
{
    slice sl = { buf + t->start, t->end - t->start };
    return sl;
}

/* Is the key token t the member name?  Escapes only make a string longer,
 * so a key as long as name must match it byte for byte, a shorter one
 * cannot, and only a longer one with a backslash needs decoding. */
static int key_is(const char *buf, const json_tok *t, const char *name, size_t nn)
{
    size_t n = t->end - t->start;
    const char *k = buf + t->start;
    if (n == nn)
        return memcmp(k, name, n) == 0;
    if (n < nn || !memchr(k, '\\', n))
        return 0;
    return json_str_eq(tok_slice(buf, t), name, nn);
}

/* Fills c from the column object at toks[i]. */
static int read_col(const char *buf, const json_tok *toks, int ntok, int i,
                    w2j_col *c)
{
    if (toks[i].type != JSON_OBJECT)
        return JSON_INVALID;
    int seen_name = 0, seen_type = 0, seen_value = 0;
    c->name.p = c->type.p = c->value.p = buf;
    c->name.n = c->type.n = c->value.n = 0;
    c->vtype = JSON_NONE;
    int k = i + 1;
    for (uint32_t m = 0; m < toks[i].size; m++) {
        const json_tok *key = &toks[k], *val = &toks[k + 1];
        int str = val->type == JSON_STRING;
        if (key_is(buf, key, "name", 4)) {
            if (seen_name++ || !str)
                return JSON_INVALID;
            c->name = tok_slice(buf, val);
        } else if (key_is(buf, key, "type", 4)) {
            if (seen_type++ || !str)
                return JSON_INVALID;
            c->type = tok_slice(buf, val);
        } else if (key_is(buf, key, "value", 5)) {
            if (seen_value++)
                return JSON_INVALID;
            c->value = tok_slice(buf, val);
            c->vtype = val->type;
        }
        k = skip(toks, ntok, k + 1);
    }
    return seen_name ? JSON_OK : JSON_INVALID;
}

/* Appends the column objects of the array at toks[i] to r->cols. */
static int read_cols(const char *buf, const json_tok *toks, int ntok, int i,
                     unsigned ncap, w2j_record *r, unsigned *count)
{
    if (toks[i].type != JSON_ARRAY)
        return JSON_INVALID;
    unsigned have = r->ncols + r->nident;
    if (toks[i].size > ncap - have)
        return JSON_NOMEM;
    int k = i + 1;
    for (uint32_t m = 0; m < toks[i].size; m++) {
        int rc = read_col(buf, toks, ntok, k, &r->cols[have + m]);
        if (rc != JSON_OK)
            return rc;
        k = skip(toks, ntok, k);
    }
    *count = toks[i].size;
    return JSON_OK;
}

/* The single character of the action string, or -1. */
static int action_char(const char *buf, const json_tok *t)
{
    if (t->type != JSON_STRING)
        return -1;
    char out[4];
    long n = json_unescape(buf + t->start, t->end - t->start, out, sizeof out);
    return n == 1 ? (unsigned char)out[0] : -1;
}

/* ==== the fast path for wal2json records ================================== */

/* w2j_parse() first tries one pass over the record that validates it as
 * strictly as json_parse() and fills the record directly, with no tokens.
 * It gives up (returns -1) on anything unusual: an escaped member name, a
 * repeated member, "identity" before "columns", deep nesting, more tokens
 * than the caller's toks[] would hold, more columns than cols[], a string
 * that is not valid UTF-8, or any error at all.  Then the tokenizer path
 * below decides, so that path alone defines what is accepted and which
 * error is returned; the fast path only has to agree with it whenever it
 * succeeds (tests/test_json.c and the json fuzzer compare the two).
 *
 * When it succeeds, every string of the record is valid UTF-8 and
 * everything outside strings is ASCII (JSON allows nothing else there), so
 * the whole record is valid UTF-8: r->utf8 says so, and the caller need
 * not check again. */

#if defined(__GNUC__)
#define FP_INLINE static inline __attribute__((always_inline))
#else
#define FP_INLINE static inline
#endif

#define FP_DEPTH 32     /* deeper values are left to the tokenizer path */

/* Do the 8 bytes at p (which exist) equal the 8 bytes of w? */
FP_INLINE int at8(const unsigned char *p, const char *w)
{
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, w, 8);
    return a == b;
}

/* The first byte at or after p that is '"', '\\', below 0x20 or above
 * 0x7f, or end.  The sixteen bytes before end are readable. */
FP_INLINE const unsigned char *str_stop(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__) && defined(__GNUC__)
    /* sixteen bytes at a time: a signed compare with 0x20 catches both the
     * control bytes and those with the high bit */
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                   _mm_cmplt_epi8(v, space));
        unsigned m = (unsigned)_mm_movemask_epi8(hit);
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
    if (p < end) {
        /* the last bytes: the sixteen that end the record (which is at
         * least that long, see w2j_fast), shifted to start at p */
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(end - 16));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                   _mm_cmplt_epi8(v, space));
        unsigned m = (unsigned)_mm_movemask_epi8(hit) >> (16 - (end - p));
        return m ? p + __builtin_ctz(m) : end;
    }
    return p;
#endif
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* eight bytes at a time: a byte is flagged when it equals '"' or '\\',
     * is below 0x20 or has its high bit; the lowest flag is a true one */
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t v, q, b;
        memcpy(&v, p, 8);
        q = v ^ (ones * '"');
        b = v ^ (ones * '\\');
        uint64_t m = (((q - ones) & ~q) | ((b - ones) & ~b) | ((v - ones * 0x20) & ~v) | v) & highs;
        if (m)
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80)
        p++;
    return p;
}

/* Bytes of the valid UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) whose lead byte, >= 0x80, is at p;
 * 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *e)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if ((size_t)(e - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* A backslash escape at p: its length, or 0 when the tokenizer would
 * refuse it. */
static size_t esc_len(const unsigned char *p, const unsigned char *e)
{
    if (e - p < 2)
        return 0;
    unsigned char c = p[1];
    if (c == 'u')
        return e - p >= 6 && is_hex(p[2]) && is_hex(p[3]) && is_hex(p[4]) && is_hex(p[5]) ? 6 : 0;
    return c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
           c == 't' ? 2 : 0;
}

/* A string whose opening quote is at p: its contents into out, *esc
 * whether it holds an escape.  Returns the byte after its closing quote,
 * or NULL. */
FP_INLINE const unsigned char *fp_str(const unsigned char *p, const unsigned char *e, slice *out, int *esc)
{
    const unsigned char *start = ++p;
    *esc = 0;
    for (;;) {
        p = str_stop(p, e);
        if (p >= e || *p < 0x20)
            return NULL;
        if (*p == '"')
            break;
        size_t k = *p == '\\' ? (*esc = 1, esc_len(p, e)) : utf8_seq(p, e);
        if (!k)
            return NULL;
        p += k;
    }
    out->p = (const char *)start;
    out->n = (size_t)(p - start);
    return p + 1;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* A number starting at p into out; returns the byte after it, or NULL.
 * One touching the end of the input is refused (the tokenizer calls it
 * partial). */
FP_INLINE const unsigned char *fp_num(const unsigned char *p, const unsigned char *e, slice *out)
{
    const unsigned char *s = p;
    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        p++;
        /* eight digits at a time (a timestamp in microseconds has 16) */
        for (uint64_t v; e - p >= 8; p += 8) {
            memcpy(&v, p, 8);
            if ((v & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL ||
                ((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL)
                break;
        }
        while (p < e && is_digit(*p))
            p++;
    } else {
        return NULL;
    }
    if (p < e && *p == '.') {
        if (++p >= e || !is_digit(*p))
            return NULL;
        do
            p++;
        while (p < e && is_digit(*p));
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        if (++p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || !is_digit(*p))
            return NULL;
        do
            p++;
        while (p < e && is_digit(*p));
    }
    if (p >= e)
        return NULL;
    out->p = (const char *)s;
    out->n = (size_t)(p - s);
    return p;
}

/* true, false or null at p (its first byte already tells which). */
FP_INLINE const unsigned char *fp_lit(const unsigned char *p, const unsigned char *e, slice *out,
                                      uint8_t *type)
{
    uint8_t ty = *p == 't' ? JSON_TRUE : *p == 'f' ? JSON_FALSE : JSON_NULL;
    size_t n = ty == JSON_FALSE ? 5 : 4;
    if ((size_t)(e - p) < n || memcmp(p, literal[ty], n))
        return NULL;
    *type = ty;
    out->p = (const char *)p;
    out->n = n;
    return p + n;
}

static const unsigned char *fp_skip_ws(const unsigned char *p, const unsigned char *e)
{
    while (p < e && is_ws(*p))
        p++;
    return p;
}

/* Skips whitespace only when there is some: valid JSON puts every
 * structural byte above ' ', and wal2json writes no whitespace. */
#define WS() do { if (p < e && *p <= ' ') p = fp_skip_ws(p, e); } while (0)

/* After a member or element: ',' (and whitespace) -> 0, the closing byte
 * -> 1, anything else -> -1. */
#define NEXT(close, r) do { WS(); if (p >= e) return NULL; unsigned char c_ = *p++; \
    if (c_ == (close)) r = 1; else if (c_ == ',') { r = 0; WS(); } else return NULL; } while (0)

static const unsigned char *fp_value(const unsigned char *p, const unsigned char *e, int depth,
                                     slice *out, uint8_t *type);

/* The rest of an object or array after its opening byte, through its
 * closing one. */
static const unsigned char *fp_container(const unsigned char *p, const unsigned char *e, int depth,
                                         int object)
{
    slice s;
    uint8_t t;
    int esc, r;
    WS();
    if (p < e && *p == (object ? '}' : ']'))
        return p + 1;
    do {
        if (object) {   /* any name will do here, escaped or not */
            if (p >= e || *p != '"' || !(p = fp_str(p, e, &s, &esc)))
                return NULL;
            WS();
            if (p >= e || *p != ':')
                return NULL;
            p++;
            WS();
        }
        if (!(p = fp_value(p, e, depth, &s, &t)))
            return NULL;
        NEXT(object ? '}' : ']', r);
    } while (!r);
    return p;
}

/* Any value at p; out is what the tokenizer's token would span (a string's
 * contents, a container with its brackets). */
static const unsigned char *fp_value(const unsigned char *p, const unsigned char *e, int depth,
                                     slice *out, uint8_t *type)
{
    int esc;
    if (p >= e)
        return NULL;
    switch (*p) {
    case '"':
        *type = JSON_STRING;
        return fp_str(p, e, out, &esc);
    case '{':
    case '[': {
        const unsigned char *s = p;
        if (depth >= FP_DEPTH || !(p = fp_container(p + 1, e, depth + 1, *s == '{')))
            return NULL;
        *type = *s == '{' ? JSON_OBJECT : JSON_ARRAY;
        out->p = (const char *)s;
        out->n = (size_t)(p - s);
        return p;
    }
    case 't':
    case 'f':
    case 'n':
        return fp_lit(p, e, out, type);
    default:
        *type = JSON_NUMBER;
        return fp_num(p, e, out);
    }
}

/* Which member name is k (no escapes)?  One of F_*, or -1. */
enum { F_ACTION, F_LSN, F_NEXTLSN, F_SCHEMA, F_TABLE, F_COLUMNS, F_IDENTITY, F_XID, F_COUNT };

static int member_of(slice k)
{
    switch (k.n) {
    case 3:
        return !memcmp(k.p, "lsn", 3) ? F_LSN : !memcmp(k.p, "xid", 3) ? F_XID : -1;
    case 5:
        return !memcmp(k.p, "table", 5) ? F_TABLE : -1;
    case 6:
        return !memcmp(k.p, "action", 6) ? F_ACTION : !memcmp(k.p, "schema", 6) ? F_SCHEMA : -1;
    case 7:
        return !memcmp(k.p, "columns", 7) ? F_COLUMNS : !memcmp(k.p, "nextlsn", 7) ? F_NEXTLSN : -1;
    case 8:
        return !memcmp(k.p, "identity", 8) ? F_IDENTITY : -1;
    default:
        return -1;
    }
}

/* An array of column objects at p, stored from cols[have]; *count gets
 * their number. */
FP_INLINE const unsigned char *fp_cols(const unsigned char *p, const unsigned char *e, const char *buf,
                                       w2j_col *cols, unsigned ncap, unsigned have,
                                       unsigned *count)
{
    unsigned m = 0;
    int r, esc;
    if (p >= e || *p != '[')
        return NULL;
    p++;
    WS();
    if (p < e && *p == ']') {
        *count = 0;
        return p + 1;
    }
    do {
        if (m >= ncap - have || p >= e || *p != '{')
            return NULL;
        w2j_col *c = &cols[have + m++];
        int seen = 0, rc;
        /* wal2json's own shape, {"name":"..","type":"..","value":..}, in
         * one straight line; anything else from the top, member by member */
        if (e - p >= 9 && at8(p, "{\"name\":") && p[8] == '"') {
            const unsigned char *q = fp_str(p + 8, e, &c->name, &esc);
            if (q && e - q >= 9 && at8(q, ",\"type\":") && q[8] == '"')
                q = fp_str(q + 8, e, &c->type, &esc);
            else
                q = NULL;
            if (q && e - q >= 9 && at8(q, ",\"value\"") && q[8] == ':') {
                q += 9;
                if (q < e && *q == '"') {
                    c->vtype = JSON_STRING;
                    q = fp_str(q, e, &c->value, &esc);
                } else if (q < e && (*q == '-' || is_digit(*q))) {
                    c->vtype = JSON_NUMBER;
                    q = fp_num(q, e, &c->value);
                } else if (q < e && (*q == 'n' || *q == 't' || *q == 'f')) {
                    q = fp_lit(q, e, &c->value, &c->vtype);
                } else {
                    q = NULL;
                }
                if (q && q < e && *q == '}') {
                    p = q + 1;
                    NEXT(']', r);
                    continue;
                }
            }
        }
        p++;
        c->name.p = c->type.p = c->value.p = buf;
        c->name.n = c->type.n = c->value.n = 0;
        c->vtype = JSON_NONE;
        WS();
        do {
            /* the member name: wal2json's own spelling, with no
             * whitespace, is recognised from 8 bytes at once */
            int which;
            if (e - p >= 8 && at8(p, "\"name\":\"")) {
                which = 1;
                p += 7;
            } else if (e - p >= 8 && at8(p, "\"type\":\"")) {
                which = 2;
                p += 7;
            } else if (e - p >= 8 && at8(p, "\"value\":")) {
                which = 4;
                p += 8;
                WS();
            } else {
                slice k;
                if (p >= e || *p != '"' || !(p = fp_str(p, e, &k, &esc)) || esc)
                    return NULL;
                WS();
                if (p >= e || *p != ':')
                    return NULL;
                p++;
                WS();
                which = k.n == 4 && !memcmp(k.p, "name", 4) ? 1 : k.n == 4 && !memcmp(k.p, "type", 4) ? 2
                      : k.n == 5 && !memcmp(k.p, "value", 5) ? 4 : 0;
            }
            if (seen & which)
                return NULL;
            seen |= which;
            if (which == 1 || which == 2) {
                if (p >= e || *p != '"' || !(p = fp_str(p, e, which == 1 ? &c->name : &c->type, &esc)))
                    return NULL;
            } else if (which == 4) {
                if (p >= e)
                    return NULL;
                if (*p == '"') {
                    c->vtype = JSON_STRING;
                    p = fp_str(p, e, &c->value, &esc);
                } else if (*p == '-' || is_digit(*p)) {
                    c->vtype = JSON_NUMBER;
                    p = fp_num(p, e, &c->value);
                } else {
                    p = fp_value(p, e, 4, &c->value, &c->vtype);
                }
                if (!p)
                    return NULL;
            } else {
                slice v;
                uint8_t t;
                if (!(p = fp_value(p, e, 4, &v, &t)))
                    return NULL;
            }
            NEXT('}', rc);
        } while (!rc);
        if (!(seen & 1))
            return NULL;
        NEXT(']', r);
    } while (!r);
    *count = m;
    return p;
}

/* A transaction id: a number of 1 to 10 digits up to 2^32-1. */
static int xid_of(slice v, w2j_record *r)
{
    uint64_t x = 0;
    if (v.n > 10)
        return -1;
    for (size_t i = 0; i < v.n; i++) {
        if (!is_digit((unsigned char)v.p[i]))
            return -1;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    if (x > UINT32_MAX)
        return -1;
    r->xid = (uint32_t)x;
    r->has_xid = 1;
    return 0;
}

/* The whole record in one pass; see the top of this section. */
static const unsigned char *fp_record(const unsigned char *p, const unsigned char *e, const char *buf,
                                      w2j_col *cols, unsigned ncap, w2j_record *r)
{
    unsigned seen = 0;
    slice k, v;
    int esc, more;
    if (p >= e || *p != '{')
        return NULL;
    p++;
    WS();
    do {
        /* wal2json's own member names (with their colon and no whitespace)
         * are recognised from their bytes; others are read as strings */
        int m = -2;
        if (e - p >= 10) {
            if (at8(p, "\"action\"") && p[8] == ':')
                m = F_ACTION, p += 9;
            else if (at8(p, "\"schema\"") && p[8] == ':')
                m = F_SCHEMA, p += 9;
            else if (at8(p, "\"table\":"))
                m = F_TABLE, p += 8;
            else if (at8(p, "\"columns") && p[8] == '"' && p[9] == ':')
                m = F_COLUMNS, p += 10;
            else if (!memcmp(p, "\"xid\":", 6))
                m = F_XID, p += 6;
            else if (!memcmp(p, "\"lsn\":", 6))
                m = F_LSN, p += 6;
            else if (e - p >= 12 && at8(p, "\"timesta") && !memcmp(p + 8, "mp\":", 4))
                m = -1, p += 12;
            if (m != -2)
                WS();
        }
        if (m == -2) {
            if (p >= e || *p != '"' || !(p = fp_str(p, e, &k, &esc)) || esc)
                return NULL;
            WS();
            if (p >= e || *p != ':')
                return NULL;
            p++;
            WS();
            m = member_of(k);
        }
        if (m >= 0) {
            if (seen & (1u << m))
                return NULL;
            seen |= 1u << m;
        }
        if (p >= e)
            return NULL;
        switch (m) {
        case F_ACTION:
            if (*p != '"' || !(p = fp_str(p, e, &v, &esc)) || esc || v.n != 1)
                return NULL;
            r->action = v.p[0];
            break;
        case F_LSN: case F_NEXTLSN: case F_SCHEMA: case F_TABLE: {
            slice *dst = m == F_LSN ? &r->lsn : m == F_NEXTLSN ? &r->nextlsn
                       : m == F_SCHEMA ? &r->schema : &r->table;
            if (*p != '"' || !(p = fp_str(p, e, dst, &esc)))
                return NULL;
            break;
        }
        case F_XID:
            if (!(p = fp_num(p, e, &v)) || xid_of(v, r))
                return NULL;
            break;
        case F_COLUMNS:
            if ((seen & (1u << F_IDENTITY)) || !(p = fp_cols(p, e, buf, cols, ncap, 0, &r->ncols)))
                return NULL;
            break;
        case F_IDENTITY:
            if (!(p = fp_cols(p, e, buf, cols, ncap, r->ncols, &r->nident)))
                return NULL;
            break;
        default:
            if (*p == '"') {
                if (!(p = fp_str(p, e, &v, &esc)))
                    return NULL;
            } else {
                uint8_t t;
                if (!(p = fp_value(p, e, 1, &v, &t)))
                    return NULL;
            }
        }
        NEXT('}', more);
    } while (!more);
    if (!(seen & (1u << F_ACTION)))
        return NULL;
    char a = r->action;
    if ((a == 'I' || a == 'U' || a == 'D' || a == 'T') && !((seen >> F_SCHEMA) & (seen >> F_TABLE) & 1))
        return NULL;
    return p;
}

static int w2j_fast(const char *buf, size_t len, unsigned ntoks, w2j_col *cols, unsigned ncap,
                    w2j_record *r)
{
    const unsigned char *e = (const unsigned char *)buf + len;
    /* every token starts at a byte of its own, so a record no longer than
     * toks[] can never need more tokens than toks[] has */
    if (len > ntoks || len < 16)
        return -1;
    const unsigned char *p = fp_record((const unsigned char *)buf, e, buf, cols, ncap, r);
    if (!p || fp_skip_ws(p, e) != e)
        return -1;
    r->utf8 = 1;
    return 0;
}

#undef WS
#undef NEXT

/* The tokenizer path: the definition of what w2j_parse() accepts. */
int w2j_parse_tokens(const char *buf, size_t len, json_tok *toks, unsigned ntoks,
                     w2j_col *cols, unsigned ncap, w2j_record *r)
{
    memset(r, 0, sizeof *r);
    r->cols = cols;
    r->lsn.p = r->nextlsn.p = r->schema.p = r->table.p = buf;

    json_parser p;
    json_init(&p);
    int ntok = json_parse(&p, buf, len, toks, ntoks);
    if (ntok < 0)
        return ntok;
    if (toks[0].type != JSON_OBJECT)
        return JSON_INVALID;

    /* Token index of each recognised member's value, 0 when absent. */
    static const char *const names[F_COUNT] = {
        "action", "lsn", "nextlsn", "schema", "table", "columns", "identity", "xid"
    };
    static const unsigned char lens[F_COUNT] = { 6, 3, 7, 6, 5, 7, 8, 3 };
    int at[F_COUNT] = { 0 };
    int k = 1;
    for (uint32_t m = 0; m < toks[0].size; m++) {
        for (int f = 0; f < F_COUNT; f++) {
            if (key_is(buf, &toks[k], names[f], lens[f])) {
                if (at[f])
                    return JSON_INVALID;
                at[f] = k + 1;
                break;
            }
        }
        k = skip(toks, ntok, k + 1);
    }

    int a = at[F_ACTION] ? action_char(buf, &toks[at[F_ACTION]]) : -1;
    if (a < 0)
        return JSON_INVALID;
    r->action = (char)a;
    slice *dst[F_COUNT] = { NULL, &r->lsn, &r->nextlsn, &r->schema, &r->table };
    for (int f = F_LSN; f <= F_TABLE; f++) {
        if (!at[f])
            continue;
        if (toks[at[f]].type != JSON_STRING)
            return JSON_INVALID;
        *dst[f] = tok_slice(buf, &toks[at[f]]);
    }
    if (a && strchr("IUDT", a) && (!at[F_SCHEMA] || !at[F_TABLE]))
        return JSON_INVALID;
    if (at[F_XID]) {   /* a transaction id: 32-bit unsigned decimal */
        const json_tok *t = &toks[at[F_XID]];
        uint64_t v = 0;
        if (t->type != JSON_NUMBER || t->end - t->start > 10)
            return JSON_INVALID;
        for (uint32_t i = t->start; i < t->end; i++) {
            if (buf[i] < '0' || buf[i] > '9')
                return JSON_INVALID;
            v = v * 10 + (uint64_t)(buf[i] - '0');
        }
        if (v > UINT32_MAX)
            return JSON_INVALID;
        r->xid = (uint32_t)v;
        r->has_xid = 1;
    }

    int rc;
    if (at[F_COLUMNS] &&
        (rc = read_cols(buf, toks, ntok, at[F_COLUMNS], ncap, r, &r->ncols)))
        return rc;
    if (at[F_IDENTITY] &&
        (rc = read_cols(buf, toks, ntok, at[F_IDENTITY], ncap, r, &r->nident)))
        return rc;
    return JSON_OK;
}

int w2j_parse(const char *buf, size_t len, json_tok *toks, unsigned ntoks,
              w2j_col *cols, unsigned ncap, w2j_record *r)
{
    memset(r, 0, sizeof *r);
    r->cols = cols;
    r->lsn.p = r->nextlsn.p = r->schema.p = r->table.p = buf;
    if (w2j_fast(buf, len, ntoks, cols, ncap, r) == 0)
        return JSON_OK;
    return w2j_parse_tokens(buf, len, toks, ntoks, cols, ncap, r);
}

/* ==== projection (columns=) ============================================== */

int names_has(char *const *names, unsigned nnames, const char *name, size_t len)
{
    unsigned lo = 0, hi = nnames;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        size_t mn = strlen(names[mid]);
        int c = memcmp(names[mid], name, mn < len ? mn : len);
        if (c == 0)
            c = mn < len ? -1 : mn > len;
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Is the escaped name s among the sorted names?  Names are compared as raw
 * bytes, so an escaped name is unescaped first (catalog names are short). */
static int name_kept(slice s, char *const *names, unsigned nnames)
{
    char buf[256];
    const char *p = s.p;
    size_t n = s.n;
    if (memchr(s.p, '\\', s.n)) {
        long u = json_unescape(s.p, s.n, buf, sizeof buf);
        if (u < 0)
            return 0;
        p = buf;
        n = (size_t)u;
    }
    return names_has(names, nnames, p, n);
}

/* The "name" member's value of the column object at toks[i]. */
static int col_name(const char *buf, const json_tok *toks, int ntok, int i, slice *out)
{
    int k = i + 1;
    for (uint32_t m = 0; m < toks[i].size; m++) {
        if (key_is(buf, &toks[k], "name", 4) && toks[k + 1].type == JSON_STRING) {
            *out = tok_slice(buf, &toks[k + 1]);
            return 0;
        }
        k = skip(toks, ntok, k + 1);
    }
    return -1;
}

long w2j_project(const char *rec, size_t len, char *const *names, unsigned nnames,
                 json_tok *toks, unsigned ntoks, char *out, size_t cap)
{
    json_parser p;
    json_init(&p);
    int ntok = json_parse(&p, rec, len, toks, ntoks);
    if (ntok < 0)
        return ntok;
    if (toks[0].type != JSON_OBJECT || cap < len)
        return JSON_INVALID;
    size_t o = 0, from = 0;
    int k = 1;
    for (uint32_t m = 0; m < toks[0].size; m++) {
        int v = k + 1;
        if ((key_is(rec, &toks[k], "columns", 7) || key_is(rec, &toks[k], "identity", 8)) &&
            toks[v].type == JSON_ARRAY) {
            /* everything up to and including '[' as it is, then the kept
             * elements joined by ',', then from ']' on */
            size_t open = toks[v].start + 1;
            memcpy(out + o, rec + from, open - from);
            o += open - from;
            int e = v + 1, first = 1;
            for (uint32_t j = 0; j < toks[v].size; j++) {
                slice nm;
                if (toks[e].type == JSON_OBJECT && col_name(rec, toks, ntok, e, &nm) == 0 &&
                    name_kept(nm, names, nnames)) {
                    if (!first)
                        out[o++] = ',';
                    memcpy(out + o, rec + toks[e].start, toks[e].end - toks[e].start);
                    o += toks[e].end - toks[e].start;
                    first = 0;
                }
                e = skip(toks, ntok, e);
            }
            from = toks[v].end - 1;
        }
        k = skip(toks, ntok, v);
    }
    memcpy(out + o, rec + from, len - from);
    return (long)(o + len - from);
}
