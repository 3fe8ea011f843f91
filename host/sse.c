/* sse.c — the Server-Sent Events parser (see sse.h). */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

void mh_sse_init(mh_sse *p, struct mh_vm *charge_to) {
  memset(p, 0, sizeof *p);
  p->line.charge_to = p->event.charge_to = p->data.charge_to = p->id.charge_to = charge_to;
  p->retry = -1;
}

void mh_sse_free(mh_sse *p) {
  mh_membuf_free(&p->line);
  mh_membuf_free(&p->event);
  mh_membuf_free(&p->data);
  mh_membuf_free(&p->id);
}

/* Applies one complete line; returns 1 when it completed an event. */
static int process_line(mh_sse *p, const char *s, size_t n, int *oom) {
  if (n == 0) return p->data.len > 0 || p->event.len > 0;
  if (s[0] == ':') return 0; /* comment */
  const char *colon = memchr(s, ':', n);
  size_t name_len = colon ? (size_t)(colon - s) : n;
  const char *value = colon ? colon + 1 : s + n;
  size_t value_len = colon ? n - name_len - 1 : 0;
  if (value_len > 0 && value[0] == ' ') value++, value_len--;
  if (name_len == 5 && memcmp(s, "event", 5) == 0) {
    p->event.len = 0;
    if (mh_membuf_append(&p->event, value, value_len)) *oom = 1;
  } else if (name_len == 4 && memcmp(s, "data", 4) == 0) {
    if (mh_membuf_append(&p->data, value, value_len) || mh_membuf_append(&p->data, "\n", 1)) *oom = 1;
  } else if (name_len == 2 && memcmp(s, "id", 2) == 0) {
    if (memchr(value, '\0', value_len) == NULL) {
      p->id.len = 0;
      if (mh_membuf_append(&p->id, value, value_len)) *oom = 1;
      p->has_id = 1;
    }
  } else if (name_len == 5 && memcmp(s, "retry", 5) == 0) {
    long r = 0;
    size_t i;
    for (i = 0; i < value_len && value[i] >= '0' && value[i] <= '9' && r < 100000000; i++)
      r = r * 10 + (value[i] - '0');
    if (i == value_len && value_len > 0) p->retry = r;
  }
  return 0;
}

size_t mh_sse_feed(mh_sse *p, const char *buf, size_t len, mh_sse_event *out, int *ready) {
  size_t i = 0;
  int oom = 0;
  *ready = 0;
  if (!p->skipped_bom && len > 0) {
    /* A UTF-8 byte order mark may open the stream. */
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) i = 3;
    p->skipped_bom = 1;
  }
  while (i < len) {
    char c = buf[i++];
    if (p->after_cr) {
      p->after_cr = 0;
      if (c == '\n') continue; /* the LF of a CRLF */
    }
    if (c != '\r' && c != '\n') {
      /* Copy the run of ordinary bytes at once. */
      size_t start = i - 1, end = start;
      while (end < len && buf[end] != '\r' && buf[end] != '\n') end++;
      if (mh_membuf_append(&p->line, buf + start, end - start)) return (size_t)-1;
      i = end;
      continue;
    }
    if (c == '\r') p->after_cr = 1;
    int complete = process_line(p, p->line.data, p->line.len, &oom);
    p->line.len = 0;
    if (oom) return (size_t)-1;
    if (complete) {
      if (p->data.len == 0) { /* an event with no data is not dispatched */
        p->event.len = 0;
        continue;
      }
      out->event = p->event.len ? p->event.data : "message";
      out->event_len = p->event.len ? p->event.len : 7;
      out->data = p->data.data;
      out->data_len = p->data.len - 1; /* without the last LF */
      out->id = p->has_id ? (p->id.data ? p->id.data : "") : NULL;
      out->id_len = p->id.len;
      out->retry = p->retry;
      *ready = 1;
      /* Cleared lazily: the caller reads out before the next feed. */
      p->data.len = 0;
      p->event.len = 0;
      return i;
    }
  }
  return i;
}
