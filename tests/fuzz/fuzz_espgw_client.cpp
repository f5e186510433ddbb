// libFuzzer harness: the strongSwan plugin's side of the control protocol
// (control/strongswan/espgw_client.c, engineer p's kernel-espgw): the reply
// parser (espgw_parse_reply, for each kind of reply the plugin waits for),
// the event parser (espgw_parse_event), the SPI text parser and the line
// reader over a real socket (espgw_read_line): what charon reads from
// espgw, which a compromised or buggy daemon controls.
//
// Byte 0 of the input picks what is expected (bits 0-1: nothing, SPI,
// usage) and, with bit 7, sends the rest through a socketpair to the line
// reader and parses every line it returns; otherwise the rest is one line,
// in a buffer of exactly its length (the parsers take a length: reading
// past it is an ASan report). Checked beyond "no crash": statuses and kinds
// are values of their enums, and every string the parsers fill is
// NUL-terminated inside its array.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "espgw_client.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "\n==FUZZ INVARIANT== %s\n", what);
  std::abort();
}

template <size_t N>
void terminated(const char (&s)[N], const char* what) {
  if (memchr(s, 0, N) == nullptr) fail(what);
}

void parse_line(const char* line, size_t len, espgw_expect_t expect) {
  espgw_reply_t r;
  memset(&r, 0x5a, sizeof(r));  // no NUL the parser did not write
  espgw_reply_status_t st = espgw_parse_reply(line, len, 7, expect, &r);
  if (st < ESPGW_REPLY_OK || st > ESPGW_REPLY_MALFORMED) fail("reply status out of range");
  if (st == ESPGW_REPLY_REFUSED || st == ESPGW_REPLY_MALFORMED) {
    terminated(r.error, "reply error text not NUL-terminated");
    terminated(r.code, "reply code not NUL-terminated");
  }
  if (st == ESPGW_REPLY_OK && expect == ESPGW_EXPECT_SPI && r.spi < 256) fail("alloc-spi reply accepted an SPI < 256");
  espgw_event_t ev;
  memset(&ev, 0x5a, sizeof(ev));
  espgw_event_kind_t k = espgw_parse_event(line, len, &ev);
  if (k < ESPGW_EVENT_OTHER || k > ESPGW_EVENT_MALFORMED) fail("event kind out of range");
  if (k == ESPGW_EVENT_EXPIRE || k == ESPGW_EVENT_DELETED) {
    terminated(ev.src, "event src not NUL-terminated");
    terminated(ev.dst, "event dst not NUL-terminated");
    terminated(ev.origin, "event origin not NUL-terminated");
    terminated(ev.reason, "event reason not NUL-terminated");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  data++, size--;
  const espgw_expect_t expect = static_cast<espgw_expect_t>((mode & 3) % 3);
  if (!(mode & 0x80)) {
    std::unique_ptr<char[]> line(new char[size ? size : 1]);
    if (size) memcpy(line.get(), data, size);
    parse_line(line.get(), size, expect);
    std::unique_ptr<char[]> text(new char[size + 1]);
    if (size) memcpy(text.get(), data, size);
    text[size] = 0;
    uint32_t spi;
    (void)espgw_parse_spi_text(text.get(), &spi);
    return 0;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) fail("socketpair");
  size_t off = 0;
  while (off < size) {  // the inputs are far below the socket buffer
    ssize_t n = write(sv[1], data + off, size - off);
    if (n <= 0) break;
    off += size_t(n);
  }
  shutdown(sv[1], SHUT_WR);
  espgw_reader_t rd;
  espgw_reader_init(&rd, sv[0]);
  const char* line;
  size_t len;
  for (int i = 0; i < 64 && espgw_read_line(&rd, espgw_now_ms() + 1000, &line, &len) == 1; i++) {
    if (memchr(line, '\n', len) || line[len] != 0) fail("reader returned a line with a newline or without its NUL");
    parse_line(line, len, expect);
  }
  espgw_reader_reset(&rd);
  close(sv[0]);
  close(sv[1]);
  return 0;
}
