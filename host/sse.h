/* sse.h — a Server-Sent Events parser (the WHATWG event-stream rules):
 * CRLF/LF/CR line ends, comments, event/data/id/retry fields, dispatch on a
 * blank line, an unfinished event at the end of the stream dropped.
 * Hand-written because no Debian library parses SSE; it is small and its
 * rules are fixed by the spec. */
#ifndef MH_SSE_H
#define MH_SSE_H

#include <stddef.h>

#include "membuf.h"

typedef struct mh_sse_event {
  const char *event; size_t event_len;  /* "message" when the stream named none */
  const char *data; size_t data_len;
  const char *id; size_t id_len;        /* the last event id, or NULL */
  long retry;                           /* last retry the stream set, or -1 */
} mh_sse_event;

typedef struct mh_sse {
  mh_membuf line, event, data, id;
  int has_id, skipped_bom, after_cr;
  long retry;
} mh_sse;

void mh_sse_init(mh_sse *p, struct mh_vm *charge_to);
void mh_sse_free(mh_sse *p);
/* Parses bytes up to the end of the first complete event. Returns the bytes
 * consumed; *ready is set when an event is ready in *out (valid until the next
 * call). Returns (size_t)-1 when memory runs out. */
size_t mh_sse_feed(mh_sse *p, const char *buf, size_t len, mh_sse_event *out, int *ready);

#endif
