/* ws.c -- the server side of RFC 6455 (WebSocket, version 13), minus I/O.
 *
 * Implements: the Sec-WebSocket-Accept computation (section 1.3 / 4.2.2),
 * unmasked server frame headers with the shortest length encoding
 * (section 5.2), close frames (5.5.1), the close codes a peer may send
 * (7.4, plus the IANA-registered 1012-1014), an incremental UTF-8
 * validator (8.1), and a streaming decoder for client frames.
 *
 * The decoder enforces what section 5 asks of a server: every client frame
 * masked; RSV1-3 clear (no extension is ever negotiated); no reserved
 * opcodes; control frames unfragmented and at most 125 bytes; continuation
 * frames only inside a fragmented message and no new message inside one;
 * 64-bit lengths with the top bit clear.  It adds pgcdc's own limit: a
 * data message longer than WS_MAX_MESSAGE is refused (1009) as soon as a
 * frame header announces it.  Data payloads are unmasked in the caller's
 * buffer, UTF-8 checked for text, and dropped: pgcdc has no use for what
 * clients send, so nothing is stored but control payloads.
 */
#include <string.h>

#include "pgcdc.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int ws_accept_key(const char *key, size_t klen, char out[WS_ACCEPT_LEN + 1])
{
    uint8_t raw[16], digest[20];
    sha1_ctx c;

    /* A 16-byte nonce is exactly 24 characters; checking first keeps
     * the decode below from working on arbitrary lengths. */
    if (klen != 24 || b64_decode(key, klen, raw, sizeof raw) != 16)
        return -1;
    /* The key is hashed as sent, not as decoded. */
    sha1_init(&c);
    sha1_update(&c, key, klen);
    sha1_update(&c, ws_guid, sizeof ws_guid - 1);
    sha1_final(&c, digest);
    if (b64_encode(digest, sizeof digest, out, WS_ACCEPT_LEN) != WS_ACCEPT_LEN)
        return -1;
    out[WS_ACCEPT_LEN] = '\0';
    return 0;
}

size_t ws_frame_header(uint8_t out[10], int opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len <= 125) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t ws_close_frame(uint8_t out[129], unsigned code, const char *reason)
{
    size_t rlen = 0;

    if (code == 0) {
        out[0] = 0x80 | WS_OP_CLOSE;
        out[1] = 0;
        return 2;
    }
    while (reason && rlen < 124 && reason[rlen])
        rlen++;
    if (rlen > 123) {
        /* Cut at a code point boundary: the peer must reject a reason
         * that is not valid UTF-8. */
        rlen = 123;
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    ws_frame_header(out, WS_OP_CLOSE, 2 + rlen);
    out[2] = (uint8_t)(code >> 8);
    out[3] = (uint8_t)code;
    if (rlen)
        memcpy(out + 4, reason, rlen);
    return 4 + rlen;
}

int ws_close_code_valid(unsigned code)
{
    /* 1004-1006 and 1015 are reserved for reporting, never sent. */
    return (code >= 1000 && code <= 1003) ||
           (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* ---- UTF-8 ------------------------------------------------------------
 * States: 0 between code points, 1 rejected (sticky), and one state per
 * "what may come next" inside a sequence.  The lead byte's special cases
 * (E0 and F0 overlongs, ED surrogates, F4 above U+10FFFF) only restrict
 * the first continuation byte, so each gets its own state for that byte.
 */
enum {
    U8_OK = 0, U8_BAD = 1,
    U8_TAIL1,       /* 1 continuation byte left, 80..BF */
    U8_TAIL2,       /* 2 left, 80..BF next */
    U8_TAIL3,       /* 3 left, 80..BF next */
    U8_E0,          /* after E0: A0..BF, then 1 */
    U8_ED,          /* after ED: 80..9F, then 1 */
    U8_F0,          /* after F0: 90..BF, then 2 */
    U8_F4           /* after F4: 80..8F, then 2 */
};

static uint32_t utf8_lead(uint8_t b)
{
    if (b < 0x80)
        return U8_OK;
    if (b < 0xC2)
        return U8_BAD;      /* stray continuation, or overlong C0/C1 */
    if (b < 0xE0)
        return U8_TAIL1;
    if (b == 0xE0)
        return U8_E0;
    if (b == 0xED)
        return U8_ED;
    if (b < 0xF0)
        return U8_TAIL2;
    if (b == 0xF0)
        return U8_F0;
    if (b < 0xF4)
        return U8_TAIL3;
    if (b == 0xF4)
        return U8_F4;
    return U8_BAD;          /* F5..FF: beyond U+10FFFF or never valid */
}

/* Next state after continuation byte b, or U8_BAD. */
static uint32_t utf8_cont(uint32_t state, uint8_t b)
{
    uint8_t lo = 0x80, hi = 0xBF;
    uint32_t next;

    switch (state) {
    case U8_TAIL1: next = U8_OK; break;
    case U8_TAIL2: next = U8_TAIL1; break;
    case U8_TAIL3: next = U8_TAIL2; break;
    case U8_E0: lo = 0xA0; next = U8_TAIL1; break;
    case U8_ED: hi = 0x9F; next = U8_TAIL1; break;
    case U8_F0: lo = 0x90; next = U8_TAIL2; break;
    case U8_F4: hi = 0x8F; next = U8_TAIL2; break;
    default: return U8_BAD;
    }
    return b >= lo && b <= hi ? next : U8_BAD;
}

uint32_t ws_utf8_step(uint32_t state, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n && state != U8_BAD; i++) {
        if (state == U8_OK) {
            /* Most text is ASCII: skip it eight bytes at a time. */
            for (uint64_t w; i + 8 <= n; i += 8) {
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
            }
            while (i < n && s[i] < 0x80)
                i++;
            if (i == n)
                break;
            state = utf8_lead(s[i]);
        } else {
            state = utf8_cont(state, s[i]);
        }
    }
    return state;
}

/* ---- frame decoder ---------------------------------------------------- */

static int is_control(unsigned op)
{
    return op >= 0x8;
}

/* Bytes of extended length that follow the second header byte. */
static unsigned ext_len_size(const ws_parser *p)
{
    unsigned len7 = p->hdr[1] & 0x7F;
    return len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
}

/* Checks the first header byte.  Returns 0 or a close code. */
static unsigned check_byte0(ws_parser *p)
{
    uint8_t b = p->hdr[0];
    unsigned op = b & 0x0F;

    p->fin = b >> 7;
    p->opcode = (uint8_t)op;
    if (b & 0x70)
        return WS_CLOSE_PROTOCOL;           /* RSV1-3 */
    if ((op > WS_OP_BINARY && op < WS_OP_CLOSE) || op > WS_OP_PONG)
        return WS_CLOSE_PROTOCOL;           /* reserved opcode */
    if (is_control(op) && !p->fin)
        return WS_CLOSE_PROTOCOL;           /* fragmented control frame */
    if (op == WS_OP_CONT && !p->msg_op)
        return WS_CLOSE_PROTOCOL;           /* nothing to continue */
    if ((op == WS_OP_TEXT || op == WS_OP_BINARY) && p->msg_op)
        return WS_CLOSE_PROTOCOL;           /* previous message unfinished */
    return 0;
}

/* Checks the payload length once all its bytes are in; sets p->left.
 * Returns 0 or a close code. */
static unsigned check_length(ws_parser *p)
{
    unsigned len7 = p->hdr[1] & 0x7F, ext = ext_len_size(p);
    uint64_t len = len7;

    if (ext) {
        len = 0;
        for (unsigned i = 0; i < ext; i++)
            len = len << 8 | p->hdr[2 + i];
        if (len >> 63)
            return WS_CLOSE_PROTOCOL;
    }
    p->left = len;
    if (is_control(p->opcode))
        return 0;                           /* <= 125, checked earlier */
    if (len > WS_MAX_MESSAGE - p->msg_len)
        return WS_CLOSE_TOO_BIG;
    p->msg_len += len;
    return 0;
}

/* Takes in one more header byte (already stored at hdr[hlen - 1]).
 * Returns -1 with *code set on a violation, 1 once the header is
 * complete and the frame has started, else 0. */
static int header_byte(ws_parser *p, unsigned *code)
{
    unsigned ext;

    if (p->hlen == 1) {
        *code = check_byte0(p);
        return *code ? -1 : 0;
    }
    if (p->hlen == 2) {
        if (!(p->hdr[1] & 0x80)) {
            *code = WS_CLOSE_PROTOCOL;      /* client frames must be masked */
            return -1;
        }
        if (is_control(p->opcode) && (p->hdr[1] & 0x7F) > 125) {
            *code = WS_CLOSE_PROTOCOL;
            return -1;
        }
    }
    ext = ext_len_size(p);
    if (p->hlen == 2 + ext) {
        *code = check_length(p);
        if (*code)
            return -1;
    }
    if (p->hlen < 2 + ext + 4)
        return 0;

    memcpy(p->mask, p->hdr + 2 + ext, 4);
    p->mpos = 0;
    p->in_frame = 1;
    if (is_control(p->opcode)) {
        p->ctl_len = 0;
    } else if (p->opcode != WS_OP_CONT) {
        p->msg_op = p->opcode;
        p->utf8 = 0;
    }
    return 1;
}

/* Unmasks n payload bytes in place and consumes them.  Returns 0 or a
 * close code. */
static unsigned payload(ws_parser *p, uint8_t *s, size_t n)
{
    unsigned m = p->mpos;

    for (size_t i = 0; i < n; i++, m = (m + 1) & 3)
        s[i] ^= p->mask[m];
    p->mpos = (uint8_t)m;
    if (is_control(p->opcode)) {
        memcpy(p->ctl + p->ctl_len, s, n);  /* n <= 125 - ctl_len */
        p->ctl_len = (uint8_t)(p->ctl_len + n);
    } else if (p->msg_op == WS_OP_TEXT) {
        /* Checked as it arrives so a bad message fails before its end. */
        p->utf8 = ws_utf8_step(p->utf8, s, n);
        if (p->utf8 == U8_BAD)
            return WS_CLOSE_INVALID_DATA;
    }
    return 0;
}

/* The whole close payload is in ctl. */
static int close_event(ws_parser *p, unsigned *code)
{
    unsigned c;

    if (p->ctl_len == 0) {
        *code = 1005;                       /* "no status received" */
        return WS_EV_CLOSE;
    }
    if (p->ctl_len == 1) {
        *code = WS_CLOSE_PROTOCOL;          /* half a status code */
        return WS_EV_ERROR;
    }
    c = (unsigned)p->ctl[0] << 8 | p->ctl[1];
    if (!ws_close_code_valid(c)) {
        *code = WS_CLOSE_PROTOCOL;
        return WS_EV_ERROR;
    }
    if (ws_utf8_step(0, p->ctl + 2, p->ctl_len - 2u) != U8_OK) {
        *code = WS_CLOSE_INVALID_DATA;
        return WS_EV_ERROR;
    }
    *code = c;
    return WS_EV_CLOSE;
}

/* The current frame's payload is complete.  Returns the event it makes. */
static int frame_end(ws_parser *p, unsigned *code)
{
    p->in_frame = 0;
    p->hlen = 0;
    switch (p->opcode) {
    case WS_OP_PING: return WS_EV_PING;
    case WS_OP_PONG: return WS_EV_PONG;
    case WS_OP_CLOSE: return close_event(p, code);
    default: break;
    }
    if (!p->fin)
        return WS_EV_NONE;
    if (p->msg_op == WS_OP_TEXT && p->utf8 != U8_OK) {
        *code = WS_CLOSE_INVALID_DATA;      /* code point cut off at the end */
        return WS_EV_ERROR;
    }
    p->msg_op = 0;
    p->msg_len = 0;
    p->utf8 = 0;
    return WS_EV_MESSAGE;
}

void ws_parser_init(ws_parser *p)
{
    memset(p, 0, sizeof *p);
}

int ws_parse(ws_parser *p, uint8_t *buf, size_t len, size_t *used,
             unsigned *code)
{
    size_t i = 0;
    int ev;

    for (;;) {
        if (!p->in_frame) {
            int r;
            if (i == len)
                break;
            p->hdr[p->hlen++] = buf[i++];
            r = header_byte(p, code);
            if (r < 0) {
                *used = i;
                return WS_EV_ERROR;
            }
            if (r == 0)
                continue;
        }
        if (p->left) {
            size_t take = len - i;
            if (take == 0)
                break;
            if (take > p->left)
                take = (size_t)p->left;
            *code = payload(p, buf + i, take);
            i += take;
            p->left -= take;
            if (*code) {
                *used = i;
                return WS_EV_ERROR;
            }
            if (p->left)
                break;
        }
        ev = frame_end(p, code);
        if (ev != WS_EV_NONE) {
            *used = i;
            return ev;
        }
    }
    *used = i;
    return WS_EV_NONE;
}
