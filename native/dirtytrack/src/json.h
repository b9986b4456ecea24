/*
 * A deliberately small JSON reader (RFC 8259 subset that covers every request
 * the helper accepts) plus a string builder for replies.
 *
 * Parsing is destructive: strings are unescaped in place in the input buffer.
 * All nodes live in a caller-owned arena; nothing is allocated per node.
 * Limits: nesting depth JSON_MAX_DEPTH, node count = arena size.
 * Numbers: only integers are representable as numbers we use (is_int); a
 * fraction or exponent parses but is flagged so handlers can reject it.
 */
#ifndef FERRY_DT_JSON_H
#define FERRY_DT_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define JSON_MAX_DEPTH 16

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype t;
	struct jval *next;  /* next sibling in the parent array/object */
	const char *key;    /* member name when the parent is an object */
	size_t keylen;
	union {
		int b;
		struct {
			uint64_t mag;   /* magnitude */
			int neg;
			int is_int;     /* no fraction/exponent and no overflow */
		} n;
		struct {
			const char *s;  /* NUL-terminated (in place), may contain NUL if \u0000 */
			size_t len;
		} s;
		struct {
			struct jval *first;
			size_t count;
		} c;            /* J_ARR / J_OBJ */
	} u;
};

struct jarena {
	struct jval *nodes;
	size_t cap;
	size_t used;
};

/* Parse buf[0..len) (buf must have one spare byte at buf[len]). Returns the
 * root or NULL; on NULL *err points to a static description. */
struct jval *json_parse(char *buf, size_t len, struct jarena *a, const char **err);

/* Object member lookup (first match); NULL if absent or obj not an object. */
struct jval *json_get(const struct jval *obj, const char *key);

/* Integer helpers: return 0 on success, -1 if v is not a non-negative integer
 * fitting the target. */
int json_u64(const struct jval *v, uint64_t *out);
int json_int_range(const struct jval *v, int64_t lo, int64_t hi, int64_t *out);

/* Growable output buffer. */
struct sbuf {
	char *p;
	size_t len;
	size_t cap;
	int oom;  /* sticky allocation failure */
};

void sb_reset(struct sbuf *b);
void sb_free(struct sbuf *b);
void sb_putc(struct sbuf *b, char c);
void sb_puts(struct sbuf *b, const char *s);
void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_json_str(struct sbuf *b, const char *s); /* quoted + escaped */
void sb_mem(struct sbuf *b, const void *p, size_t n);
int sb_reserve(struct sbuf *b, size_t extra);

#endif
