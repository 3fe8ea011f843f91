/* fuzz_request.c — libFuzzer target for the server's request path: each
 * input is sent as the raw bytes of one connection to an in-process
 * `moonhive serve` (server.c, server_lua.c and the runtime's router), whose
 * answer is read to the end. Built and run by `make fuzz` (clang,
 * -fsanitize=fuzzer,address,undefined). Any crash, leak, sanitizer report
 * or hang (a connection the server never finishes) is a finding.
 *
 * The server and its loop are created once; a connection per input. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "host.h"
#include "server.h"

static uv_loop_t loop;
static mh_host host;
static mh_server *server;

static void setup(void) {
  signal(SIGPIPE, SIG_IGN);
  setenv("MOONHIVE_ACCESS_LOG", "off", 1);
  setenv("MOONHIVE_HTTP_HEAD_TIMEOUT_MS", "200", 1);
  setenv("MOONHIVE_HTTP_BODY_TIMEOUT_MS", "200", 1);
  setenv("MOONHIVE_HTTP_MAX_BODY_BYTES", "65536", 1);
  char dir[] = "/tmp/moonhive-fuzz.XXXXXX";
  if (mkdtemp(dir)) setenv("MOONHIVE_DATA", dir, 1);
  uv_loop_init(&loop);
  mh_host_init(&host, &loop);
  mh_server_limits limits;
  char err[256];
  if (mh_server_limits_init(&limits, err, sizeof err) != 0) abort();
  server = mh_server_new(&host, &limits);
  if (server == NULL || mh_server_listen(server, "127.0.0.1", 0, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz: %s\n", err);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (server == NULL) setup();
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)mh_server_port(server))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  connect(fd, (struct sockaddr *)&a, sizeof a); /* EINPROGRESS: the loop accepts it */
  size_t sent = 0;
  int shut = 0;
  char buf[65536];
  /* Turn the loop and the client by turns until the server closes. */
  for (int turns = 0; turns < 100000; turns++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    if (sent < size) {
      ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
      if (w > 0) sent += (size_t)w;
      else if (w < 0 && errno != EAGAIN && errno != ENOTCONN && errno != EINPROGRESS) sent = size;
    } else if (!shut) {
      shutdown(fd, SHUT_WR);
      shut = 1;
    }
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != ENOTCONN)) break;
    if (r < 0) {
      struct pollfd p = {fd, POLLIN, 0};
      poll(&p, 1, 1);
    }
  }
  close(fd);
  for (int i = 0; i < 20; i++) uv_run(&loop, UV_RUN_NOWAIT);
  return 0;
}
