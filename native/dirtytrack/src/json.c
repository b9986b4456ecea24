#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	char *p;
	char *end;
	struct jarena *a;
	const char *err;
};

static struct jval *node(struct parser *ps, enum jtype t)
{
	if (ps->a->used >= ps->a->cap) {
		ps->err = "too many JSON values";
		return NULL;
	}
	struct jval *v = &ps->a->nodes[ps->a->used++];
	memset(v, 0, sizeof *v);
	v->t = t;
	return v;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int read_hex4(struct parser *ps, const char *q, unsigned *out)
{
	if (ps->end - q < 4)
		return -1;
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(q[i]);
		if (h < 0)
			return -1;
		v = (v << 4) | (unsigned)h;
	}
	*out = v;
	return 0;
}

/* ps->p at the opening quote. Unescapes in place; result written from the
 * quote position onward (never longer than the source). */
static int parse_string(struct parser *ps, const char **out, size_t *outlen)
{
	char *src = ps->p + 1;
	char *dst = ps->p; /* overwrite the opening quote onward */
	char *start = dst;
	while (1) {
		if (src >= ps->end) {
			ps->err = "unterminated string";
			return -1;
		}
		unsigned char c = (unsigned char)*src;
		if (c == '"') {
			src++;
			break;
		}
		if (c < 0x20) {
			ps->err = "control character in string";
			return -1;
		}
		if (c != '\\') {
			*dst++ = (char)c;
			src++;
			continue;
		}
		src++;
		if (src >= ps->end) {
			ps->err = "unterminated escape";
			return -1;
		}
		char e = *src++;
		switch (e) {
		case '"': *dst++ = '"'; break;
		case '\\': *dst++ = '\\'; break;
		case '/': *dst++ = '/'; break;
		case 'b': *dst++ = '\b'; break;
		case 'f': *dst++ = '\f'; break;
		case 'n': *dst++ = '\n'; break;
		case 'r': *dst++ = '\r'; break;
		case 't': *dst++ = '\t'; break;
		case 'u': {
			unsigned cp;
			if (read_hex4(ps, src, &cp) < 0) {
				ps->err = "bad \\u escape";
				return -1;
			}
			src += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				unsigned lo;
				if (ps->end - src < 6 || src[0] != '\\' || src[1] != 'u' || read_hex4(ps, src + 2, &lo) < 0 ||
				    lo < 0xDC00 || lo > 0xDFFF) {
					ps->err = "bad surrogate pair";
					return -1;
				}
				src += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				ps->err = "lone low surrogate";
				return -1;
			}
			if (cp < 0x80) {
				*dst++ = (char)cp;
			} else if (cp < 0x800) {
				*dst++ = (char)(0xC0 | (cp >> 6));
				*dst++ = (char)(0x80 | (cp & 0x3F));
			} else if (cp < 0x10000) {
				*dst++ = (char)(0xE0 | (cp >> 12));
				*dst++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*dst++ = (char)(0x80 | (cp & 0x3F));
			} else {
				*dst++ = (char)(0xF0 | (cp >> 18));
				*dst++ = (char)(0x80 | ((cp >> 12) & 0x3F));
				*dst++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*dst++ = (char)(0x80 | (cp & 0x3F));
			}
			break;
		}
		default:
			ps->err = "bad escape";
			return -1;
		}
	}
	*outlen = (size_t)(dst - start);
	*dst = '\0'; /* dst < src here: at least the closing quote was consumed */
	*out = start;
	ps->p = src;
	return 0;
}

static int parse_number(struct parser *ps, struct jval *v)
{
	char *q = ps->p;
	int neg = 0, is_int = 1;
	uint64_t mag = 0;
	if (q < ps->end && *q == '-') {
		neg = 1;
		q++;
	}
	if (q >= ps->end || *q < '0' || *q > '9') {
		ps->err = "bad number";
		return -1;
	}
	if (*q == '0') {
		q++;
	} else {
		while (q < ps->end && *q >= '0' && *q <= '9') {
			unsigned d = (unsigned)(*q - '0');
			if (mag > (UINT64_MAX - d) / 10)
				is_int = 0; /* overflow: keep scanning, flag it */
			else
				mag = mag * 10 + d;
			q++;
		}
	}
	if (q < ps->end && *q == '.') {
		q++;
		if (q >= ps->end || *q < '0' || *q > '9') {
			ps->err = "bad number";
			return -1;
		}
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
		is_int = 0;
	}
	if (q < ps->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < ps->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= ps->end || *q < '0' || *q > '9') {
			ps->err = "bad number";
			return -1;
		}
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
		is_int = 0;
	}
	v->u.n.mag = mag;
	v->u.n.neg = neg;
	v->u.n.is_int = is_int;
	ps->p = q;
	return 0;
}

static int match_lit(struct parser *ps, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0)
		return -1;
	ps->p += n;
	return 0;
}

static struct jval *parse_value(struct parser *ps, int depth)
{
	skip_ws(ps);
	if (ps->p >= ps->end) {
		ps->err = "unexpected end of input";
		return NULL;
	}
	if (depth > JSON_MAX_DEPTH) {
		ps->err = "nesting too deep";
		return NULL;
	}
	char c = *ps->p;
	struct jval *v;
	if (c == '{' || c == '[') {
		int obj = (c == '{');
		v = node(ps, obj ? J_OBJ : J_ARR);
		if (!v)
			return NULL;
		ps->p++;
		skip_ws(ps);
		struct jval **tail = &v->u.c.first;
		if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) {
			ps->p++;
			return v;
		}
		while (1) {
			const char *key = NULL;
			size_t keylen = 0;
			if (obj) {
				skip_ws(ps);
				if (ps->p >= ps->end || *ps->p != '"') {
					ps->err = "expected member name";
					return NULL;
				}
				if (parse_string(ps, &key, &keylen) < 0)
					return NULL;
				skip_ws(ps);
				if (ps->p >= ps->end || *ps->p != ':') {
					ps->err = "expected ':'";
					return NULL;
				}
				ps->p++;
			}
			struct jval *child = parse_value(ps, depth + 1);
			if (!child)
				return NULL;
			child->key = key;
			child->keylen = keylen;
			*tail = child;
			tail = &child->next;
			v->u.c.count++;
			skip_ws(ps);
			if (ps->p >= ps->end) {
				ps->err = "unexpected end of input";
				return NULL;
			}
			if (*ps->p == ',') {
				ps->p++;
				continue;
			}
			if (*ps->p == (obj ? '}' : ']')) {
				ps->p++;
				return v;
			}
			ps->err = obj ? "expected ',' or '}'" : "expected ',' or ']'";
			return NULL;
		}
	}
	if (c == '"') {
		v = node(ps, J_STR);
		if (!v)
			return NULL;
		if (parse_string(ps, &v->u.s.s, &v->u.s.len) < 0)
			return NULL;
		return v;
	}
	if (c == '-' || (c >= '0' && c <= '9')) {
		v = node(ps, J_NUM);
		if (!v)
			return NULL;
		if (parse_number(ps, v) < 0)
			return NULL;
		return v;
	}
	if (c == 't' || c == 'f') {
		v = node(ps, J_BOOL);
		if (!v)
			return NULL;
		if (match_lit(ps, c == 't' ? "true" : "false") < 0) {
			ps->err = "bad literal";
			return NULL;
		}
		v->u.b = (c == 't');
		return v;
	}
	if (c == 'n') {
		v = node(ps, J_NULL);
		if (!v)
			return NULL;
		if (match_lit(ps, "null") < 0) {
			ps->err = "bad literal";
			return NULL;
		}
		return v;
	}
	ps->err = "unexpected character";
	return NULL;
}

struct jval *json_parse(char *buf, size_t len, struct jarena *a, const char **err)
{
	struct parser ps = {.p = buf, .end = buf + len, .a = a, .err = NULL};
	a->used = 0;
	struct jval *root = parse_value(&ps, 0);
	if (root) {
		skip_ws(&ps);
		if (ps.p != ps.end) {
			ps.err = "trailing characters after JSON value";
			root = NULL;
		}
	}
	if (!root)
		*err = ps.err ? ps.err : "parse error";
	return root;
}

struct jval *json_get(const struct jval *obj, const char *key)
{
	if (!obj || obj->t != J_OBJ)
		return NULL;
	size_t kl = strlen(key);
	for (struct jval *m = obj->u.c.first; m; m = m->next)
		if (m->keylen == kl && memcmp(m->key, key, kl) == 0)
			return m;
	return NULL;
}

int json_u64(const struct jval *v, uint64_t *out)
{
	if (!v || v->t != J_NUM || !v->u.n.is_int)
		return -1;
	if (v->u.n.neg && v->u.n.mag != 0)
		return -1;
	*out = v->u.n.mag;
	return 0;
}

int json_int_range(const struct jval *v, int64_t lo, int64_t hi, int64_t *out)
{
	if (!v || v->t != J_NUM || !v->u.n.is_int)
		return -1;
	if (v->u.n.mag > (uint64_t)INT64_MAX)
		return -1;
	int64_t x = (int64_t)v->u.n.mag;
	if (v->u.n.neg)
		x = -x;
	if (x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

/* ---- output buffer ---- */

int sb_reserve(struct sbuf *b, size_t extra)
{
	if (b->oom)
		return -1;
	if (b->len + extra + 1 <= b->cap)
		return 0;
	size_t nc = b->cap ? b->cap : 256;
	while (nc < b->len + extra + 1) {
		if (nc > SIZE_MAX / 2) {
			b->oom = 1;
			return -1;
		}
		nc *= 2;
	}
	char *np = realloc(b->p, nc);
	if (!np) {
		b->oom = 1;
		return -1;
	}
	b->p = np;
	b->cap = nc;
	return 0;
}

void sb_reset(struct sbuf *b)
{
	b->len = 0;
	b->oom = 0;
	if (b->p)
		b->p[0] = '\0';
}

void sb_free(struct sbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}

void sb_mem(struct sbuf *b, const void *p, size_t n)
{
	if (sb_reserve(b, n) < 0)
		return;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void sb_putc(struct sbuf *b, char c)
{
	sb_mem(b, &c, 1);
}

void sb_puts(struct sbuf *b, const char *s)
{
	sb_mem(b, s, strlen(s));
}

void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char tmp[256];
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = 1;
		return;
	}
	if ((size_t)n < sizeof tmp) {
		sb_mem(b, tmp, (size_t)n);
		return;
	}
	if (sb_reserve(b, (size_t)n) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void sb_json_str(struct sbuf *b, const char *s)
{
	sb_putc(b, '"');
	for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
		unsigned char c = *q;
		if (c == '"' || c == '\\') {
			sb_putc(b, '\\');
			sb_putc(b, (char)c);
		} else if (c == '\n') {
			sb_puts(b, "\\n");
		} else if (c == '\t') {
			sb_puts(b, "\\t");
		} else if (c < 0x20 || c == 0x7f) {
			sb_printf(b, "\\u%04x", c);
		} else if (c >= 0x80) {
			/* messages are ASCII by construction; escape anything else
			 * byte-wise so the output stays valid UTF-8 JSON */
			sb_printf(b, "\\u%04x", c);
		} else {
			sb_putc(b, (char)c);
		}
	}
	sb_putc(b, '"');
}
