/* membuf.c — growable byte buffers charged to a sandbox's memory cap. */
#include "membuf.h"

#include <stdlib.h>
#include <string.h>

#include "vm.h"

int mh_membuf_append(mh_membuf *b, const void *p, size_t n) {
  if (n == 0) return 0;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    if (b->charge_to && mh_vm_charge(b->charge_to, (ptrdiff_t)(cap - b->cap)) != 0) return -1;
    char *grown = realloc(b->data, cap);
    if (grown == NULL) {
      if (b->charge_to) mh_vm_charge(b->charge_to, -(ptrdiff_t)(cap - b->cap));
      return -1;
    }
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void mh_membuf_consume(mh_membuf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void mh_membuf_free(mh_membuf *b) {
  if (b->charge_to && b->cap) mh_vm_charge(b->charge_to, -(ptrdiff_t)b->cap);
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
