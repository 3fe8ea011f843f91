/* membuf.h — a growable byte buffer in host memory, optionally charged to a
 * sandbox's memory cap (HTTP bodies and stream buffers). */
#ifndef MH_MEMBUF_H
#define MH_MEMBUF_H

#include <stddef.h>

struct mh_vm;

typedef struct mh_membuf {
  char *data;
  size_t len, cap;
  struct mh_vm *charge_to; /* NULL: not charged */
} mh_membuf;

/* Appends; returns 0, or -1 when memory (or the sandbox's cap) says no. */
int mh_membuf_append(mh_membuf *b, const void *p, size_t n);
/* Drops the first n bytes. */
void mh_membuf_consume(mh_membuf *b, size_t n);
/* Frees the memory and refunds the charge. */
void mh_membuf_free(mh_membuf *b);

#endif
