/* fuzz_snapshot.c -- libFuzzer target for snapshot.c.
 *
 * The first input byte picks a value class and rendering flags; the rest is
 * a value's text as PostgreSQL would output it.  Besides memory safety it
 * checks the contracts: snap_render_value writes exactly the length it
 * reports (and reports the same length with no room); a text or bytea value
 * comes out as one JSON string that unescapes back to the input (bytea: the
 * input after its "\x"), escaped only where escape_json escapes; a boolean
 * as true or false; NULL as null.  The same bytes parsed as
 * pg_current_snapshot() text give, when accepted, xmin <= xip < xmax in
 * ascending order and, for a span of xids a 32-bit xid can name, each xip
 * invisible and xmin - 1 visible.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgcdc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond)
{
    if (!cond)
        abort();
}

static void check_value(int cls, int flags, const char *v, size_t n, int isnull)
{
    size_t need = snap_render_value(NULL, 0, cls, flags, v, n, isnull);
    char *out = malloc(need + 1);
    out[need] = '#';
    require(snap_render_value(out, need, cls, flags, v, n, isnull) == need);
    require(out[need] == '#');
    if (isnull) {
        require(need == 4 && !memcmp(out, "null", 4));
    } else if (cls == VAL_BOOL) {
        require((need == 4 && !memcmp(out, "true", 4)) || (need == 5 && !memcmp(out, "false", 5)));
    } else if (cls == VAL_TEXT || (cls == VAL_BYTEA && n >= 2)) {
        const char *src = cls == VAL_BYTEA ? v + 2 : v;
        size_t sn = cls == VAL_BYTEA ? n - 2 : n;
        require(need >= 2 && out[0] == '"' && out[need - 1] == '"');
        for (size_t i = 1; i + 1 < need; i++) {
            unsigned char c = (unsigned char)out[i];
            require(c >= 0x20);                     /* control bytes escaped */
            if (c == '"')
                require(out[i - 1] == '\\');
        }
        char *back = malloc(sn + 1);
        long bn = json_unescape(out + 1, need - 2, back, sn + 1);
        require(bn == (long)sn && !memcmp(back, src, sn));
        free(back);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int cls = data[0] & 3, flags = (data[0] >> 2) & 0x7f;
    const char *v = (const char *)data + 1;
    size_t n = size - 1;
    /* PostgreSQL's text output never holds a NUL byte */
    if (!memchr(v, 0, n)) {
        check_value(cls, flags, v, n, 0);
        check_value(cls, flags, v, n, 1);
        size_t e = pg_json_escape(NULL, 0, v, n);
        require(e >= n + 2 && e <= 6 * n + 2);
    }
    uint64_t xmin, xmax, xip[64];
    long k = pgsnap_parse(v, n, &xmin, &xmax, xip, 64);
    if (k >= 0) {
        require(xmin <= xmax);
        for (long i = 0; i < k; i++) {
            require(xip[i] >= xmin && xip[i] < xmax);
            require(i == 0 || xip[i - 1] <= xip[i]);
            /* (32-bit xids name one transaction within 2^31 of xmax) */
            if (xmax - xmin < (1ull << 31))
                require(!xid_visible((uint32_t)xip[i], xmin, xmax, xip, (size_t)k));
        }
        if (xmin > 1 && xmax - xmin < (1ull << 31))
            require(xid_visible((uint32_t)(xmin - 1), xmin, xmax, xip, (size_t)k));
    }
    return 0;
}
