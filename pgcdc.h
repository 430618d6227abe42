/* pgcdc.h -- shared types and the small contracts between pgcdc's units.
 *
 * Units: sha1.c (SHA-1, HMAC-SHA1), sha256.c (SHA-256, HMAC-SHA256),
 * base64.c (RFC 4648 base64 and base64url), ws.c (RFC 6455 handshake key,
 * frame encoder, streaming frame decoder), sse.c (Server-Sent Events
 * framing), json.c (wal2json format-version 2
 * tokenizer), jwt.c (JSON Web Tokens, RSA verification; its own header
 * jwt.h), query.c (the subscription language and matcher), http.c
 * (request-head parser), stream.c (the stream identity), pgcdc.c
 * (everything that touches a file descriptor).  The units never call into
 * pgcdc.c; the parsers do no I/O and work on (pointer, length) slices of
 * the caller's buffers (only params_parse and spec_parse allocate their
 * results).
 */
#ifndef PGCDC_H
#define PGCDC_H

#include <stddef.h>
#include <stdint.h>

#define PGCDC_VERSION "0.1.0"

/* A borrowed byte range; never NUL-terminated. */
typedef struct slice {
    const char *p;
    size_t n;
} slice;

/* ==== sha1.c ============================================================= */

/* The input side shared by SHA-1 and SHA-256 (Merkle-Damgard over 64-byte
 * blocks): buffering into whole blocks, then the final padding.  block is
 * the hash's compression function over the chaining state h. */
typedef void md64_block_fn(uint32_t *h, const uint8_t *blk);
typedef struct md64 {
    uint64_t len;       /* bytes hashed so far */
    uint8_t buf[64];
    size_t used;        /* bytes pending in buf */
} md64;
void md64_update(md64 *m, uint32_t *h, md64_block_fn *block,
                 const void *data, size_t len);
/* Appends the 0x80 byte, zeros and the 64-bit big-endian bit length, and
 * runs the last block or two; h then holds the digest words. */
void md64_final(md64 *m, uint32_t *h, md64_block_fn *block);

typedef struct sha1_ctx {
    uint32_t h[5];
    md64 md;
} sha1_ctx;

void sha1_init(sha1_ctx *c);
void sha1_update(sha1_ctx *c, const void *data, size_t len);
void sha1_final(sha1_ctx *c, uint8_t out[20]);
/* One-shot SHA-1 of data into out. */
void sha1(const void *data, size_t len, uint8_t out[20]);
/* HMAC-SHA1 (RFC 2104) of msg under key into out; any key length. */
void hmac_sha1(const void *key, size_t klen, const void *msg, size_t mlen,
               uint8_t out[20]);

/* ==== sha256.c =========================================================== */

typedef struct sha256_ctx {
    uint32_t h[8];
    md64 md;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
/* One-shot SHA-256 (FIPS 180-4) of data into out. */
void sha256(const void *data, size_t len, uint8_t out[32]);
/* HMAC-SHA256 (RFC 2104) of msg under key into out; any key length. */
void hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                 uint8_t out[32]);

/* ==== base64.c =========================================================== */

/* Bytes needed to encode n bytes: padded standard / unpadded url form. */
#define B64_ENCLEN(n) ((((n) + 2) / 3) * 4)
#define B64URL_ENCLEN(n) (((n) * 4 + 2) / 3)

/* Standard alphabet with '=' padding.  Returns the length written (no NUL
 * is written), or -1 when cap is too small. */
long b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);
/* Strict decode of the padded standard form (length a multiple of 4, padding
 * only at the end, no whitespace).  Returns bytes written, or -1 on invalid
 * input or when cap is too small. */
long b64_decode(const char *in, size_t n, uint8_t *out, size_t cap);
/* base64url without padding (RFC 4648 section 5). */
long b64url_encode(const uint8_t *in, size_t n, char *out, size_t cap);
/* Strict decode of unpadded base64url: rejects '=', '+', '/', any other
 * stray byte, an impossible length (n % 4 == 1) and non-zero trailing bits.
 * Returns bytes written, or -1. */
long b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* ==== ws.c =============================================================== */

enum {
    WS_OP_CONT = 0x0, WS_OP_TEXT = 0x1, WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8, WS_OP_PING = 0x9, WS_OP_PONG = 0xA
};

/* Close codes pgcdc sends. */
enum {
    WS_CLOSE_NORMAL = 1000, WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002, WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008, WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_TRY_AGAIN = 1013
};

#define WS_MAX_MESSAGE (64 * 1024)   /* client data messages above: 1009 */
#define WS_ACCEPT_LEN 28             /* base64 of a SHA-1 digest */

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key.  The key (whitespace already
 * trimmed) must be valid base64 decoding to exactly 16 bytes.  Writes 28
 * characters and a NUL into out.  Returns 0, or -1 for an invalid key. */
int ws_accept_key(const char *key, size_t klen, char out[WS_ACCEPT_LEN + 1]);

/* Writes an unmasked FIN frame header for opcode and payload length into out
 * (at least 10 bytes), with the shortest length encoding.  Returns 2, 4 or 10. */
size_t ws_frame_header(uint8_t out[10], int opcode, uint64_t len);

/* Writes a complete close frame (code, then reason truncated to 123 bytes)
 * into out (at least 129 bytes).  code 0 means an empty close payload.
 * Returns the frame length. */
size_t ws_close_frame(uint8_t out[129], unsigned code, const char *reason);

/* Streaming decoder of client frames.  It keeps no reference to the input:
 * data-message payloads are unmasked, UTF-8 checked (text) and dropped;
 * control payloads (at most 125 bytes) are collected in ctl[].  Zero it with
 * ws_parser_init() before the first byte.  About 160 bytes. */
typedef struct ws_parser {
    uint8_t hdr[14];     /* header bytes gathered so far */
    uint8_t hlen;        /* ... how many */
    uint8_t in_frame;    /* 1 while reading a payload */
    uint8_t opcode;      /* current frame's opcode */
    uint8_t fin;         /* current frame's FIN bit */
    uint8_t mask[4];
    uint8_t mpos;        /* index into mask for the next payload byte */
    uint8_t msg_op;      /* opcode of the fragmented data message, 0 if none */
    uint8_t ctl_len;     /* control payload bytes in ctl */
    uint32_t utf8;       /* UTF-8 validator state across frames */
    uint64_t left;       /* payload bytes left in the current frame */
    uint64_t msg_len;    /* bytes of the current data message so far */
    uint8_t ctl[125];
} ws_parser;

enum ws_event {
    WS_EV_NONE = 0,      /* all input consumed, nothing to report */
    WS_EV_MESSAGE,       /* a complete data message (ignored by pgcdc) */
    WS_EV_PING,          /* ping; payload in ctl[0..ctl_len) */
    WS_EV_PONG,          /* pong; payload in ctl[0..ctl_len) */
    WS_EV_CLOSE,         /* close; *code = received code (1005 if none),
                            reason in ctl[2..ctl_len) (validated UTF-8) */
    WS_EV_ERROR          /* protocol violation; *code = the close code to
                            send (1002, 1007 or 1009); stop feeding */
};

void ws_parser_init(ws_parser *p);
/* Feeds up to len bytes.  Returns an event and stores in *used how many
 * bytes were consumed; call again with the rest after each event.  The
 * caller's bytes are unmasked in place (buf is modified). */
int ws_parse(ws_parser *p, uint8_t *buf, size_t len, size_t *used,
             unsigned *code);
/* Incremental UTF-8 validation (Hoehrmann-style states): start with state 0;
 * returns the new state: 0 = complete and valid so far, 1 = invalid (final),
 * other values = inside a sequence.  Fails at the first invalid byte. */
uint32_t ws_utf8_step(uint32_t state, const uint8_t *s, size_t n);
/* Is code a valid close code to receive (RFC 6455 7.4)? */
int ws_close_code_valid(unsigned code);

/* ==== sse.c ============================================================== */

#define SSE_CLOSE_MAX 240   /* room for sse_close_event() */

/* Bytes of the Server-Sent Event carrying a message: "id: <pos>\n" when the
 * payload starts with {"pos":"...", then "data: " before every line of the
 * payload, then "\n\n". */
size_t sse_event_len(const char *payload, size_t n);
/* Writes that event (sse_event_len bytes) into out; returns its length. */
size_t sse_event(char *out, const char *payload, size_t n);
/* "event: close\ndata: <reason>\n\n", the reason on one line and cut at
 * 200 bytes; returns the length. */
size_t sse_close_event(char out[SSE_CLOSE_MAX], const char *reason);

/* ==== json.c ============================================================= */

enum {
    JSON_OK = 0,
    JSON_INVALID = -1,   /* malformed */
    JSON_PARTIAL = -2,   /* input ended before the value did */
    JSON_NOMEM = -3      /* more tokens or columns than the caller's room */
};

enum json_type {
    JSON_NONE = 0, JSON_OBJECT, JSON_ARRAY, JSON_STRING, JSON_NUMBER,
    JSON_TRUE, JSON_FALSE, JSON_NULL
};

/* One token: for a string, [start, end) excludes the quotes and is still
 * escaped; for other scalars it is the literal text; for containers it spans
 * the brackets.  size = members (object: keys) or elements. */
typedef struct json_tok {
    uint8_t type;
    uint32_t start, end;
    uint32_t size;
    int32_t parent;
} json_tok;

/* Resumable tokenizer state (jsmn-like).  Zero it with json_init(). */
typedef struct json_parser {
    uint32_t pos;        /* next byte to read */
    uint32_t next;       /* next token slot */
    int32_t super;       /* index of the open container, -1 at top */
    uint8_t expect;      /* internal grammar state */
    uint8_t done;        /* the top-level value is complete */
} json_parser;

void json_init(json_parser *p);
/* Tokenizes one JSON value from buf[0..len).  May be called again with the
 * same buffer grown longer after JSON_PARTIAL; it resumes where it stopped.
 * Returns the number of tokens (> 0) once the top-level value is complete
 * (trailing whitespace allowed, anything else is JSON_INVALID), or a
 * JSON_* error.  Never reads buf[len] or beyond. */
int json_parse(json_parser *p, const char *buf, size_t len,
               json_tok *toks, unsigned ntoks);

/* One column of a wal2json record. */
typedef struct w2j_col {
    slice name;          /* escaped string contents */
    slice type;          /* escaped string contents */
    slice value;         /* escaped string contents, or literal text */
    uint8_t vtype;       /* enum json_type of the value */
} w2j_col;

/* A wal2json format-version 2 record, as slices of the input. */
typedef struct w2j_record {
    char action;         /* 'B','C','I','U','D','T','M' */
    uint8_t has_xid;     /* "xid" was present ... */
    uint32_t xid;        /* ... the transaction id (include-xids) */
    slice lsn;           /* "lsn" (B, C: the commit LSN), may be empty */
    slice nextlsn;       /* "nextlsn" (B, C), may be empty */
    slice schema, table; /* escaped string contents (I, U, D, T) */
    w2j_col *cols;       /* "columns" then "identity", in caller storage */
    unsigned ncols;      /* entries of "columns" */
    unsigned nident;     /* entries of "identity", after the columns */
    uint8_t utf8;        /* 1: the whole record is known to be valid UTF-8
                          * (0: not checked; see w2j_parse) */
} w2j_record;

/* Parses one complete record.  toks/ntoks is scratch for the tokenizer;
 * cols/ncap receives the columns.  Requires an object with a one-letter
 * "action"; I/U/D/T need "schema" and "table"; "columns" and "identity",
 * when present, must be arrays of objects with a string "name".  Returns
 * JSON_OK or a JSON_* error (JSON_PARTIAL for a truncated record). */
int w2j_parse(const char *buf, size_t len, json_tok *toks, unsigned ntoks,
              w2j_col *cols, unsigned ncap, w2j_record *r);
/* The same answer by the tokenizer alone: the reference that defines what
 * w2j_parse() accepts (it first tries one pass with no tokens, and falls
 * back to this whenever that pass is unsure).  For the tests. */
int w2j_parse_tokens(const char *buf, size_t len, json_tok *toks, unsigned ntoks,
                     w2j_col *cols, unsigned ncap, w2j_record *r);

/* Unescapes the contents of a JSON string (as in a slice above) into out,
 * turning \uXXXX (with surrogate pairs) into UTF-8.  Returns the length, or
 * -1 on a bad escape or lone surrogate, or when cap is too small. */
long json_unescape(const char *s, size_t n, char *out, size_t cap);

/* Does the escaped string s equal the raw bytes raw?  (No copy needed.) */
int json_str_eq(slice s, const char *raw, size_t rawlen);

/* Is the raw name[0..len) among names (nnames of them, NUL-terminated,
 * sorted bytewise)?  Binary search; 1 or 0. */
int names_has(char *const *names, unsigned nnames, const char *name, size_t len);

/* Copies the JSON object rec[0..len) into out (cap >= len), keeping in its
 * "columns" and "identity" arrays only the column objects whose name is
 * among names (nnames of them, NUL-terminated, sorted bytewise, unescaped);
 * every other byte is copied as it is.  toks/ntoks is scratch.  Returns the
 * length written, or a JSON_* error. */
long w2j_project(const char *rec, size_t len, char *const *names, unsigned nnames,
                 json_tok *toks, unsigned ntoks, char *out, size_t cap);

/* Parses "X/X" (hexadecimal halves) into an LSN.  Returns 0 or -1. */
int lsn_parse(const char *s, size_t n, uint64_t *lsn);

/* ==== query.c ============================================================ */

/* Case-insensitive comparison of a byte range with a NUL-terminated word. */
int ieq(const char *s, size_t n, const char *word);
/* Drops leading spaces/tabs and trailing spaces/tabs/CRs from s[0..*n);
 * returns the new start and stores the new length in *n. */
const char *trim(const char *s, size_t *n);

/* The one walker of comma-separated lists (header values, settings, change
 * types).  Each element comes trimmed of spaces and tabs (and trailing CRs);
 * empty elements are returned too (an empty list is one empty element), so
 * each caller decides what they mean.  With escapes, a backslash keeps the
 * next byte from ending an element (the backslash stays in it). */
typedef struct list_iter {
    const char *p;
    size_t n;
    uint8_t escapes;
    uint8_t last;       /* the element just returned was the last */
} list_iter;
void list_begin(list_iter *it, const char *s, size_t n, int escapes);
/* Stores the next element in *elem and returns 1, or returns 0 at the end. */
int list_next(list_iter *it, slice *elem);
/* A list setting split once: its non-empty elements, as slices of the
 * string it was parsed from. */
typedef struct word_list {
    slice *v;
    unsigned n;
} word_list;
/* Splits s (NULL: an empty list) into out; out->v is malloc'd (free it).
 * Returns 0, or -1 when out of memory. */
int word_list_parse(const char *s, word_list *out);
/* Is s[0..n) exactly one of the elements? */
int word_list_has(const word_list *l, const char *s, size_t n);
/* PostgreSQL's spellings of a boolean (its parse_bool): a case-insensitive
 * prefix of true, false, yes, no, or on, off (two letters at least), 1, 0.
 * Returns 1, 0, or -1 for none of them. */
int pg_bool(const char *s, size_t n);
/* Does a comma-separated token list (as in Connection:) hold word
 * (case-insensitive)? */
int has_token(const char *s, size_t n, const char *word);

enum { SUB_INSERT = 1, SUB_UPDATE = 2, SUB_DELETE = 4, SUB_TRUNCATE = 8,
       SUB_ALL = 15 };
enum { OP_EQ, OP_NEQ, OP_LT, OP_LTE, OP_GT, OP_GTE, OP_IN, OP_IS };
enum { IS_NULL, IS_TRUE, IS_FALSE };

/* A decimal number as written: value = digits x 10^exp, digits without a
 * sign, leading zeros removed; a view into the text it was parsed from. */
typedef struct decnum {
    const char *ip;  size_t in;   /* integer digits (no leading zeros) */
    const char *fp;  size_t fn;   /* fraction digits */
    long exp;                     /* the exponent written after e/E */
    int neg;
} decnum;

typedef struct fval {
    char *s;            /* unescaped value, NUL-terminated */
    size_t n;
    int isnum;          /* parsed as a number into num */
    decnum num;
} fval;

typedef struct filter {
    uint8_t op;         /* OP_* */
    uint8_t is;         /* IS_* for OP_IS */
    char *col;          /* column name, NUL-terminated */
    size_t col_len;
    fval *vals;         /* one for eq..gte, one or more for in */
    unsigned nvals;
    char *text;         /* the filter as written (decoded), for grants; for
                           a rule's filter with a claim put in, the rule's
                           text and the values (hex), for the key only */
    uint8_t from_rule;  /* added by a [rules] entry, not by the client */
    const fval **by_bytes;  /* in: the values sorted by bytes ... */
    const fval **by_num;    /* ... and the numeric ones by value */
    unsigned nnum;
} filter;

/* What a client may ask for (a 400 beyond): filters it writes, and values
 * in all its in-lists together. */
#define SPEC_MAX_FILTERS 16
#define SPEC_MAX_IN 1000

/* A parsed subscription; everything lives in one allocation (free(spec)). */
typedef struct spec {
    uint8_t types;      /* SUB_* bits */
    char *schema, *table;
    filter *filters;
    unsigned nfilters;
    char **cols;        /* columns= projection: names sorted bytewise, */
    unsigned ncols;     /* no duplicates; 0: every column */
    char *key;          /* canonical text: identical specs share a group */
} spec;

/* The parameters of a /ws request's query string, percent-decoded. */
typedef struct ws_params {
    char *query;        /* NULL when absent */
    char **filters;     /* extra filter= values */
    unsigned nfilters;
    char *token, *since, *grant;
    char *columns;      /* columns= list as written, NULL when absent */
    char *snapshot;     /* "1": the rows first (docs/protocol.md, Snapshots) */
    char *buf;          /* owns the strings above */
} ws_params;

/* Splits and percent-decodes a query string ('+' is a space).  Returns 0,
 * or -1 with a message in err (duplicate query, bad %-escape, NUL byte, out
 * of memory). */
int params_parse(const char *qs, size_t n, ws_params *out, char *err, size_t errlen);
void params_free(ws_params *p);
/* Parses a subscription (query plus extra filters).  Returns a spec to
 * free(), or NULL with the reason in err (a grammar error, or out of
 * memory). */
spec *spec_parse(const char *query, char *const *filters, unsigned nfilters,
                 char *err, size_t errlen);

/* A [rules] entry (docs/protocol.md, Rules): the filters a JWT client's
 * subscriptions to one table (or to any, "*") must also pass, with claim
 * placeholders, and the columns it may receive. */
typedef struct rule {
    char *schema, *table;   /* both NULL for the "*" rule */
    spec *sp;               /* the filters (and ;columns= in sp->cols) */
    char **paths;           /* per filter: its placeholder's claim path, or NULL */
    int line;               /* where it was configured */
} rule;

/* A claim's value put in for a placeholder: raw bytes (a string claim
 * unescaped, a number as written). */
typedef struct rule_value {
    const char *s;
    size_t n;
} rule_value;

/* Parses a [rules] key (schema.table, "quoted"."names", a bare table of
 * public, or "*") and value (filters joined by '&', or "allow", optionally
 * followed by ";columns=a,b").  A value that is exactly {dotted.path} is a
 * placeholder (not for is); any other brace is an error.  Returns 0, or -1
 * with the reason in err. */
int rule_parse(const char *key, const char *value, rule *out, char *err, size_t errlen);
void rule_free(rule *r);
/* The rule for schema.table: its own, else "*", else NULL. */
const rule *rule_find(const rule *rules, unsigned n, const char *schema, const char *table);
/* spec_parse, plus the columns= list (NULL: none) and a rule (NULL: none)
 * whose filters are AND-ed after the client's, placeholder filter i taking
 * vals[i][0..nvals[i]) as its values; they are never read as grammar.  With
 * a rule that limits columns, the client's columns must be among them
 * (else 403), and no columns= means the rule's.  Returns a spec to free(),
 * or NULL with the reason in err and the status (400 or 403) in *status. */
spec *spec_build(const char *query, char *const *filters, unsigned nfilters,
                 const char *columns, const rule *r, const rule_value *const *vals,
                 const unsigned *nvals, int *status, char *err, size_t errlen);
/* Is name[0..n) (raw bytes) among the spec's projected columns (or is there
 * no projection)? */
int spec_has_col(const spec *sp, const char *name, size_t n);
/* SUB_* bit of a wal2json action letter ('I', 'U', 'D', 'T'), else 0. */
uint8_t action_bit(char a);
/* One column's value as the matcher compares it, worked out at most once
 * per change whatever the number of subscriptions asking. */
typedef struct col_cache {
    uint32_t gen;       /* == match_ctx.gen once worked out for this change */
    uint8_t isnum;      /* a JSON number, parsed into num */
    uint8_t bad;        /* a string that does not unescape (never matches) */
    slice v;            /* the value: unescaped for strings, else as written */
    decnum num;
} col_cache;

/* A change being matched against subscriptions.  Keep one (zeroed once)
 * and call match_begin for each change. */
typedef struct match_ctx {
    const w2j_record *r;
    char *buf;          /* unescaped strings ... */
    size_t cap, used;   /* ... room: the record's length suffices */
    col_cache *cols;    /* one per column and identity column of r */
    uint32_t gen;
} match_ctx;

/* Starts matching the change r: buf[0..cap) receives its unescaped string
 * values, cols[0..ncap) (ncap >= r's columns plus identity columns, zeroed
 * before the first use) caches each column's value. */
void match_begin(match_ctx *m, const w2j_record *r, char *buf, size_t cap,
                 col_cache *cols, unsigned ncap);
/* Does the change (of spec's table) match the spec's types and filters?
 * Costs a pass over the column names per filter, each value worked out
 * once per change, and for an in-list a binary search. */
int spec_match(const spec *s, match_ctx *m);
/* Parses a decimal number written as JSON allows, or also with a leading '+',
 * a leading '.', or a trailing '.' when lax.  Returns 0 or -1. */
int num_parse(const char *s, size_t n, int lax, decnum *d);
/* Compares two numbers: <0, 0, >0. */
int num_cmp(const decnum *a, const decnum *b);
/* Position of a change: commit LSN and index.  Parses "X/X:n"; 0 or -1. */
int pos_parse(const char *s, size_t n, uint64_t *lsn, uint32_t *idx);
/* One element of a wal2json add-tables list: schema and table patterns,
 * still backslash-escaped ("*" alone matches any name). */
typedef struct table_pat {
    slice schema, table;
} table_pat;
/* Splits an element (trimmed, escapes kept) at its first unescaped dot; with
 * none, the schema is public.  Returns the number of unescaped dots. */
size_t table_pat_of(slice elem, table_pat *out);
/* Does schema.table match the pattern?  (An empty table never does.) */
int table_pat_match(const table_pat *t, const char *schema, const char *table);
/* Does "schema.table" match a wal2json add-tables list (NULL: all)? */
int tables_allow(const char *list, const char *schema, const char *table);

/* ==== http.c ============================================================= */

/* A parsed request head: slices of the caller's buffer. */
typedef struct http_req {
    slice method, target, version, path, query;
    slice key, wsver, origin, auth, xff, inm, host, leid;
    int upgrade_ws, upgrade_any, conn_upgrade, nkey, nver, norigin, nhost, nleid;
    size_t head_len;    /* bytes up to and including the empty line */
} http_req;

/* Parses a complete request head in b[0..n).  Returns 1 when r is filled,
 * 0 when more bytes are needed, -1 when the head is malformed. */
int http_parse(const char *b, size_t n, http_req *r);
/* Where the request head in b[0..n) ends (the first empty line), looking
 * only at the bytes from *scanned on (and the two before, which the empty
 * line may span), so that a head arriving in pieces is scanned once in
 * all.  Start with *scanned = 0; it is advanced to n while no end is
 * found.  Returns the head's length, or 0 when it is not complete. */
size_t http_head_end(const char *b, size_t n, size_t *scanned);
/* The Origin policy (docs/protocol.md, [server] allowed_origins) for a request:
 * 0 no Origin header (not a browser); 1 allowed: the server's own origin
 * (its scheme-less host[:port] equals Host), or listed in allowed (exact
 * values, or "*"; NULL: none); -1 refused (also for more than one Origin
 * header). */
int http_origin_check(const http_req *r, const word_list *allowed);

/* ==== stream.c =========================================================== */

/* The stream identity of /health (docs/protocol.md, Resume): 16 hex
 * digits and a NUL into out, from the database's system identifier and name
 * and the tables and wal2json_options settings (NULL: unset), normalized so
 * that settings with the same meaning give the same value.  Returns 0, or
 * -1 when out of memory. */
int stream_id(const char *sysid, const char *dbname, const char *tables,
              const char *options, char out[17]);

/* ==== snapshot.c: rendering rows as wal2json does, snapshot visibility === */

/* Rendering options from wal2json_options (defaults: W2J_TYPES only). */
enum { W2J_TYPES = 1, W2J_TYPE_OIDS = 2, W2J_DOMAIN_BASE = 4, W2J_NOT_NULL = 8,
       W2J_POSITIONS = 16, W2J_DEFAULTS = 32, W2J_NUM_AS_STRING = 64 };
/* How wal2json writes a value of a type (by the column's own type oid, so a
 * domain over integer is written as a string). */
enum { VAL_TEXT, VAL_NUMBER, VAL_BOOL, VAL_BYTEA };

/* One column of the table, from the catalog. */
typedef struct snap_col {
    const char *name;       /* attname */
    const char *type;       /* format_type() as wal2json names it (the
                               domain's base type under W2J_DOMAIN_BASE) */
    uint32_t typoid;        /* atttypid */
    int attnum;
    int notnull;            /* attnotnull */
    int deterministic;      /* its collation compares bytes for equality */
    const char *defexpr;    /* pg_get_expr() of its default, NULL if none */
} snap_col;

/* The W2J_* flags that "name=value,..." wal2json options select (values as
 * PostgreSQL's booleans; other options are ignored). */
int w2j_render_flags(const char *options);
/* VAL_* for a type oid. */
int snap_value_class(uint32_t typoid);
/* The functions below write at most cap bytes into out (which may be NULL
 * when cap is 0) and return the length the whole output needs, as
 * snprintf does; nothing is NUL-terminated unless said. */
/* s[0..n) as a JSON string, quotes included, escaped as PostgreSQL's
 * escape_json escapes it. */
size_t pg_json_escape(char *out, size_t cap, const char *s, size_t n);
/* A value as wal2json writes it, given PostgreSQL's text output v[0..n)
 * (bytea in hex form) and the type's VAL_* class; isnull: SQL NULL. */
size_t snap_render_value(char *out, size_t cap, int vclass, int flags,
                         const char *v, size_t n, int isnull);
/* What wal2json writes for a column before its value ({"name":...,
 * "value":) and after it (,"optional":...}). */
size_t snap_col_head(char *out, size_t cap, const snap_col *c, int flags);
size_t snap_col_tail(char *out, size_t cap, const snap_col *c, int flags);
/* A double-quoted SQL identifier. */
size_t sql_ident(char *out, size_t cap, const char *name);
/* The snapshot query: DECLARE <cursor> NO SCROLL CURSOR FOR SELECT <cols>
 * FROM ONLY <table> WHERE <the filters SQL can say with pgcdc's meaning>,
 * NUL-terminated, followed by its *nparams parameter values, each
 * NUL-terminated; *pushed (may be NULL) counts the filters in the WHERE. */
size_t snap_query(char *out, size_t cap, const char *cursor, const spec *sp,
                  const snap_col *cols, unsigned ncols, int flags, unsigned *nparams,
                  size_t *pushed);

/* Parses pg_current_snapshot()'s text "xmin:xmax:xip,xip,..." (64-bit
 * transaction ids) into *xmin, *xmax and xip[0..cap), sorted.  Returns the
 * number of xip entries, or -1 when malformed or more than cap. */
long pgsnap_parse(const char *s, size_t n, uint64_t *xmin, uint64_t *xmax,
                  uint64_t *xip, size_t cap);
/* The 64-bit transaction id whose low 32 bits are xid nearest to near (in
 * near's epoch, the one before or the one after). */
uint64_t xid_widen(uint32_t xid, uint64_t near);
/* Is a committed transaction with 32-bit id xid visible to the snapshot
 * (below xmin, or below xmax and not in xip)?  xid is widened near xmax. */
int xid_visible(uint32_t xid, uint64_t xmin, uint64_t xmax, const uint64_t *xip, size_t nxip);

/* ==== grant.c ============================================================ */

/* Verifies a signed grant (docs/protocol.md, Grants) for the
 * subscription sp at unix time now, under secret[0..slen).  Returns 0 (and
 * the grant's expiry in *exp), 401 (missing, malformed, bad signature or
 * expired) or 403 (asks for more than granted), with the reason in err
 * (never the grant itself). */
int grant_verify(const char *secret, size_t slen, const char *grant, const spec *sp,
                 int64_t now, int64_t *exp, char *err, size_t errlen);

#endif
