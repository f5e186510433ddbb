// espgw_client (the kernel-espgw plugin's JSON and transport half): requests
// are checked field by field against JSON parsed independently (nlohmann, not
// the jansson that built them); replies and events against hand-written lines,
// malformed ones included; keys never reach jansson and are wiped before free.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include <jansson.h>
#include <nlohmann/json.hpp>

#include "control/strongswan/espgw_client.h"

using nlohmann::json;

// ---- the line buffer must be zero when it is freed (link: --wrap=free) ----
extern "C" void __real_free(void *p);
static void *watched_block;
static size_t watched_len;
static bool watched_freed, watched_zero;

extern "C" void __wrap_free(void *p)
{
  if (p && p == watched_block) {
    const auto *b = static_cast<const unsigned char *>(p);
    watched_zero = true;
    for (size_t i = 0; i < watched_len; i++) watched_zero &= b[i] == 0;
    watched_freed = true;
    watched_block = nullptr;
  }
  __real_free(p);
}

// ---- jansson's allocations, searched for key text when freed ----
static std::vector<std::string> forbidden;
static bool jansson_saw_key;

static void *tracking_malloc(size_t n)
{
  auto *b = static_cast<size_t *>(malloc(n + sizeof(size_t)));
  if (!b) return nullptr;
  *b = n;
  return b + 1;
}

static void tracking_free(void *p)
{
  if (!p) return;
  auto *b = static_cast<size_t *>(p) - 1;
  std::string content(static_cast<const char *>(p), *b);
  for (const auto &f : forbidden)
    if (content.find(f) != std::string::npos) jansson_saw_key = true;
  free(b);
}

namespace {

const uint8_t kKey128[20] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
                             0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13};
const char kKey128Hex[] = "0x000102030405060708090a0b0c0d0e0f10111213";

std::string text(const espgw_line_t &l) { return std::string(l.text, l.len); }

// One '\n', at the end, and the object before it.
json parse_line(const espgw_line_t &l)
{
  std::string s = text(l);
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(s.back(), '\n');
  EXPECT_EQ(s.find('\n'), s.size() - 1);
  EXPECT_EQ(strlen(l.text), l.len);
  return json::parse(s.substr(0, s.size() - 1));
}

espgw_add_sa_t inbound_sa()
{
  espgw_add_sa_t r{};
  r.inbound = true;
  r.spi = 0xc3a1f00d;
  r.src = "203.0.113.1";
  r.dst = "169.254.10.1";
  r.key_bits = 128;
  r.key = kKey128;
  r.key_len = sizeof(kKey128);
  r.esn = true;
  r.replay_window = 64;
  r.encap = true;
  r.sport = 4500;
  r.dport = 4501;
  r.soft = {900, 0, 2700};
  r.hard = {1000, 0, 3600};
  r.ts_local[0] = "10.240.128.0/25";
  r.ts_local[1] = "10.240.128.128/25";
  r.n_local = 2;
  r.ts_remote[0] = "172.31.0.0/16";
  r.n_remote = 1;
  r.origin = "plugin";
  return r;
}

TEST(EspgwRequest, AddSaInboundFieldsExact)
{
  espgw_add_sa_t r = inbound_sa();
  espgw_line_t l;
  ASSERT_EQ(espgw_req_add_sa(&r, 7, &l), 0);
  json expected = {
      {"op", "add-sa"}, {"id", 7}, {"direction", "in"}, {"spi", "0xc3a1f00d"},
      {"src", "203.0.113.1"}, {"dst", "169.254.10.1"}, {"algo", "aes128-gcm"},
      {"key", kKey128Hex}, {"esn", true}, {"replay_window", 64},
      {"encap", {{"sport", 4500}, {"dport", 4501}}},
      {"lifetime", {{"soft", {{"bytes", 900}, {"packets", 0}, {"seconds", 2700}}},
                    {"hard", {{"bytes", 1000}, {"packets", 0}, {"seconds", 3600}}}}},
      {"traffic_selectors", {{"local", {"10.240.128.0/25", "10.240.128.128/25"}},
                             {"remote", {"172.31.0.0/16"}}}},
      {"origin", "plugin"}};
  EXPECT_EQ(parse_line(l), expected);
  espgw_line_free(&l);
}

TEST(EspgwRequest, AddSaOutboundPlainEspNoLifetimeNoSelectors)
{
  static const uint8_t key256[36] = {0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77,
                                     0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0x01, 0x02,
                                     0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
                                     0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0xde, 0xad, 0xbe, 0xef};
  espgw_add_sa_t r{};
  r.op = "replace-sa";
  r.spi = 0x100;
  r.src = "169.254.10.1";
  r.dst = "203.0.113.1";
  r.key_bits = 256;
  r.key = key256;
  r.key_len = sizeof(key256);
  r.replay_window = 64;  // outbound: never sent
  espgw_line_t l;
  ASSERT_EQ(espgw_req_add_sa(&r, 9, &l), 0);
  json expected = {{"op", "replace-sa"}, {"id", 9}, {"direction", "out"},
                   {"spi", "0x00000100"}, {"src", "169.254.10.1"}, {"dst", "203.0.113.1"},
                   {"algo", "aes256-gcm"},
                   {"key", "0xffeeddccbbaa998877665544332211000102030405060708090a0b0c0d0e0f10deadbeef"},
                   {"esn", false}, {"encap", false}};
  EXPECT_EQ(parse_line(l), expected);
  espgw_line_free(&l);
}

TEST(EspgwRequest, AddSaRefusesWhatEspgwCannotTake)
{
  espgw_line_t l;
  espgw_add_sa_t r = inbound_sa();
  r.spi = 255;  // reserved (RFC 4303)
  EXPECT_EQ(espgw_req_add_sa(&r, 1, &l), -1);
  EXPECT_EQ(l.text, nullptr);
  r = inbound_sa();
  r.key_len = 24;  // AES-192 with salt
  EXPECT_EQ(espgw_req_add_sa(&r, 1, &l), -1);
  r = inbound_sa();
  r.key_bits = 256;  // 20 bytes is AES-128's
  EXPECT_EQ(espgw_req_add_sa(&r, 1, &l), -1);
  r = inbound_sa();
  r.n_remote = 0;  // selectors on one side only
  EXPECT_EQ(espgw_req_add_sa(&r, 1, &l), -1);
  r = inbound_sa();
  r.src = "2001:db8::1";
  EXPECT_EQ(espgw_req_add_sa(&r, 1, &l), -1);
  r = inbound_sa();
  r.op = "delete-sa";
  EXPECT_EQ(espgw_req_add_sa(&r, 1, &l), -1);
}

TEST(EspgwRequest, KeyNeverInJanssonAndLineWipedBeforeFree)
{
  forbidden = {std::string(kKey128Hex + 2), std::string(reinterpret_cast<const char *>(kKey128),
                                                         sizeof(kKey128))};
  jansson_saw_key = false;
  json_set_alloc_funcs(tracking_malloc, tracking_free);
  espgw_add_sa_t r = inbound_sa();
  espgw_line_t l;
  int rc = espgw_req_add_sa(&r, 7, &l);
  json_set_alloc_funcs(malloc, free);
  ASSERT_EQ(rc, 0);
  EXPECT_FALSE(jansson_saw_key) << "a jansson allocation held key material";
  ASSERT_NE(text(l).find(kKey128Hex + 2), std::string::npos);  // the key is in the line

  watched_block = l.text;
  watched_len = l.len;
  watched_freed = watched_zero = false;
  espgw_line_free(&l);
  EXPECT_TRUE(watched_freed);
  EXPECT_TRUE(watched_zero) << "the line holding the key was freed unwiped";
  EXPECT_EQ(l.text, nullptr);
  EXPECT_EQ(l.len, 0u);
}

TEST(EspgwRequest, UpdateSa)
{
  espgw_update_sa_t u{};
  u.spi = 0x4001;
  u.dst = "203.0.113.1";
  u.remote = "192.0.2.77";
  u.set_encap = true;
  u.encap = true;
  u.sport = 4500;
  u.dport = 62001;
  espgw_line_t l;
  ASSERT_EQ(espgw_req_update_sa(&u, 11, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "update-sa"}, {"id", 11}, {"direction", "out"},
                                 {"spi", "0x00004001"}, {"dst", "203.0.113.1"},
                                 {"remote", "192.0.2.77"},
                                 {"encap", {{"sport", 4500}, {"dport", 62001}}}}));
  espgw_line_free(&l);

  espgw_update_sa_t in{};
  in.inbound = true;
  in.spi = 0x5001;
  in.dst = "169.254.10.1";
  in.set_encap = true;  // NAT gone: plain ESP
  ASSERT_EQ(espgw_req_update_sa(&in, 12, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "update-sa"}, {"id", 12}, {"direction", "in"},
                                 {"spi", "0x00005001"}, {"dst", "169.254.10.1"},
                                 {"encap", false}}));
  espgw_line_free(&l);

  espgw_update_sa_t nothing{};
  nothing.spi = 0x5001;
  nothing.dst = "169.254.10.1";
  EXPECT_EQ(espgw_req_update_sa(&nothing, 13, &l), -1);
}

TEST(EspgwRequest, AllocDeleteQueryFlushSubscribe)
{
  espgw_line_t l;
  ASSERT_EQ(espgw_req_alloc_spi("169.254.10.1", "203.0.113.1", 0, 7, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "alloc-spi"}, {"id", 7}, {"dst", "169.254.10.1"},
                                 {"src", "203.0.113.1"}}));
  espgw_line_free(&l);
  ASSERT_EQ(espgw_req_alloc_spi("169.254.10.1", nullptr, 30, 8, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "alloc-spi"}, {"id", 8}, {"dst", "169.254.10.1"},
                                 {"timeout_s", 30}}));
  espgw_line_free(&l);
  EXPECT_EQ(espgw_req_alloc_spi("169.254.10.1", nullptr, 3601, 8, &l), -1);
  EXPECT_EQ(espgw_req_alloc_spi("not-an-address", nullptr, 0, 8, &l), -1);

  ASSERT_EQ(espgw_req_delete_sa(true, 0xdeadbeef, "169.254.10.1", 21, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "delete-sa"}, {"id", 21}, {"direction", "in"},
                                 {"spi", "0xdeadbeef"}, {"dst", "169.254.10.1"}}));
  espgw_line_free(&l);
  ASSERT_EQ(espgw_req_query_sa(false, 0x5001, "203.0.113.1", 22, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "query-sa"}, {"id", 22}, {"direction", "out"},
                                 {"spi", "0x00005001"}, {"dst", "203.0.113.1"}}));
  espgw_line_free(&l);
  ASSERT_EQ(espgw_req_flush_sas("plugin", 23, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "flush-sas"}, {"id", 23}, {"origin", "plugin"}}));
  espgw_line_free(&l);
  ASSERT_EQ(espgw_req_simple("subscribe", 24, &l), 0);
  EXPECT_EQ(parse_line(l), (json{{"op", "subscribe"}, {"id", 24}}));
  espgw_line_free(&l);
}

// ---------------------------------------------------------------- replies

espgw_reply_status_t parse(const std::string &line, uint64_t id, espgw_expect_t expect,
                           espgw_reply_t *out)
{
  return espgw_parse_reply(line.data(), line.size(), id, expect, out);
}

TEST(EspgwReply, OkRefusedAndOtherIds)
{
  espgw_reply_t r;
  EXPECT_EQ(parse(R"({"ok":true,"id":5})", 5, ESPGW_EXPECT_NOTHING, &r), ESPGW_REPLY_OK);
  EXPECT_FALSE(r.larval);
  EXPECT_EQ(parse(R"({"ok":true,"id":5,"larval":true})", 5, ESPGW_EXPECT_NOTHING, &r),
            ESPGW_REPLY_OK);
  EXPECT_TRUE(r.larval);
  EXPECT_EQ(parse(R"({"ok":false,"id":5,"error":"no tunnel from 1.2.3.4 to 5.6.7.8"})", 5,
                  ESPGW_EXPECT_NOTHING, &r),
            ESPGW_REPLY_REFUSED);
  EXPECT_STREQ(r.error, "no tunnel from 1.2.3.4 to 5.6.7.8");
  EXPECT_STREQ(r.code, "");
  EXPECT_EQ(parse(R"({"ok":false,"id":5,"error":"no such SA","code":"not-found"})", 5,
                  ESPGW_EXPECT_USAGE, &r),
            ESPGW_REPLY_REFUSED);
  EXPECT_STREQ(r.code, "not-found");
  // a refusal without a reason still says something
  EXPECT_EQ(parse(R"({"ok":false,"id":5})", 5, ESPGW_EXPECT_NOTHING, &r), ESPGW_REPLY_REFUSED);
  EXPECT_STRNE(r.error, "");
  // a long reason is cut, not overflowed
  std::string longer(5000, 'x');
  EXPECT_EQ(parse(R"({"ok":false,"id":5,"error":")" + longer + "\"}", 5, ESPGW_EXPECT_NOTHING, &r),
            ESPGW_REPLY_REFUSED);
  EXPECT_EQ(strlen(r.error), sizeof(r.error) - 1);
  // late replies to abandoned requests, and events, are skipped
  EXPECT_EQ(parse(R"({"ok":true,"id":4})", 5, ESPGW_EXPECT_NOTHING, &r), ESPGW_REPLY_OTHER_ID);
  EXPECT_EQ(parse(R"({"ok":false,"id":4,"error":"x"})", 5, ESPGW_EXPECT_NOTHING, &r),
            ESPGW_REPLY_OTHER_ID);
  EXPECT_EQ(parse(R"({"event":"tunnel-state","tunnel":"a","up":true})", 5, ESPGW_EXPECT_NOTHING,
                  &r),
            ESPGW_REPLY_OTHER_ID);
}

TEST(EspgwReply, Malformed)
{
  espgw_reply_t r;
  const char *bad[] = {
      R"({"ok":true,"id":5)",           // truncated
      R"({"ok":true,"id":5}})",         // trailing garbage
      "",                               // empty
      R"([true])",                      // not an object
      R"("ok")",
      R"({"id":5})",                    // ok missing
      R"({"ok":"true","id":5})",        // ok of the wrong type
      R"({"ok":1,"id":5})",
      R"({"ok":null,"id":5})",
      R"({"ok":true})",                 // id missing
      R"({"ok":true,"id":"5"})",        // id of the wrong type
      R"({"ok":true,"id":5.0})",
      R"({"ok":true,"ok":false,"id":5})",  // duplicate member
      R"({"ok":true,"id":5,"larval":"yes"})",
  };
  for (const char *b : bad) {
    EXPECT_EQ(parse(b, 5, ESPGW_EXPECT_NOTHING, &r), ESPGW_REPLY_MALFORMED) << b;
    EXPECT_STRNE(r.error, "") << b;
  }
}

TEST(EspgwReply, AllocSpi)
{
  espgw_reply_t r;
  EXPECT_EQ(parse(R"({"ok":true,"id":7,"spi":"0xc3a1f00d","expires_in_s":180})", 7,
                  ESPGW_EXPECT_SPI, &r),
            ESPGW_REPLY_OK);
  EXPECT_EQ(r.spi, 0xc3a1f00du);
  EXPECT_EQ(parse(R"({"ok":true,"id":7,"spi":"0x100"})", 7, ESPGW_EXPECT_SPI, &r), ESPGW_REPLY_OK);
  EXPECT_EQ(r.spi, 0x100u);
  EXPECT_EQ(parse(R"({"ok":true,"id":7,"spi":4294967295})", 7, ESPGW_EXPECT_SPI, &r),
            ESPGW_REPLY_OK);
  EXPECT_EQ(r.spi, 0xffffffffu);
  const char *bad[] = {
      R"({"ok":true,"id":7})",                     // no spi
      R"({"ok":true,"id":7,"spi":"0x"})",
      R"({"ok":true,"id":7,"spi":"0x123456789"})",  // 9 digits
      R"({"ok":true,"id":7,"spi":"c3a1f00d"})",     // no 0x
      R"({"ok":true,"id":7,"spi":"0xc3a1f00g"})",
      R"({"ok":true,"id":7,"spi":"0x c3a1"})",
      R"({"ok":true,"id":7,"spi":"0xff"})",         // reserved: never allocated
      R"({"ok":true,"id":7,"spi":4294967296})",     // over 32 bits
      R"({"ok":true,"id":7,"spi":-1})",
      R"({"ok":true,"id":7,"spi":1e5})",
      R"({"ok":true,"id":7,"spi":null})",
  };
  for (const char *b : bad) EXPECT_EQ(parse(b, 7, ESPGW_EXPECT_SPI, &r), ESPGW_REPLY_MALFORMED) << b;
}

TEST(EspgwReply, QuerySa)
{
  espgw_reply_t r;
  EXPECT_EQ(parse(R"({"ok":true,"id":3,"direction":"in","spi":"0x00005001","tunnel":"aws-a1",)"
                  R"("packets":12,"bytes":1200,"idle_seconds":0.25})",
                  3, ESPGW_EXPECT_USAGE, &r),
            ESPGW_REPLY_OK);
  EXPECT_EQ(r.packets, 12u);
  EXPECT_EQ(r.bytes, 1200u);
  EXPECT_TRUE(r.idle_known);
  EXPECT_EQ(r.idle_ms, 250u);
  EXPECT_EQ(parse(R"({"ok":true,"id":3,"packets":0,"bytes":0,"idle_seconds":null})", 3,
                  ESPGW_EXPECT_USAGE, &r),
            ESPGW_REPLY_OK);
  EXPECT_FALSE(r.idle_known);
  EXPECT_EQ(parse(R"({"ok":true,"id":3,"packets":9223372036854775807,"bytes":1,"idle_seconds":7})",
                  3, ESPGW_EXPECT_USAGE, &r),
            ESPGW_REPLY_OK);
  EXPECT_EQ(r.packets, 9223372036854775807u);
  EXPECT_EQ(r.idle_ms, 7000u);
  const char *bad[] = {
      R"({"ok":true,"id":3,"packets":18446744073709551616,"bytes":1,"idle_seconds":0})",  // huge
      R"({"ok":true,"id":3,"packets":1,"bytes":99999999999999999999999,"idle_seconds":0})",
      R"({"ok":true,"id":3,"packets":-1,"bytes":1,"idle_seconds":0})",
      R"({"ok":true,"id":3,"packets":1.5,"bytes":1,"idle_seconds":0})",
      R"({"ok":true,"id":3,"packets":"1","bytes":1,"idle_seconds":0})",
      R"({"ok":true,"id":3,"bytes":1,"idle_seconds":0})",               // packets missing
      R"({"ok":true,"id":3,"packets":1,"bytes":1})",                    // idle missing
      R"({"ok":true,"id":3,"packets":1,"bytes":1,"idle_seconds":-0.5})",
      R"({"ok":true,"id":3,"packets":1,"bytes":1,"idle_seconds":1e300})",
      R"({"ok":true,"id":3,"packets":1,"bytes":1,"idle_seconds":"0.1"})",
      R"({"ok":true,"id":3,"packets":1,"bytes":1,"idle_seconds":true})",
  };
  for (const char *b : bad) EXPECT_EQ(parse(b, 3, ESPGW_EXPECT_USAGE, &r), ESPGW_REPLY_MALFORMED) << b;
}

// ----------------------------------------------------------------- events

espgw_event_kind_t event(const std::string &line, espgw_event_t *out)
{
  return espgw_parse_event(line.data(), line.size(), out);
}

TEST(EspgwEvent, ExpireAndDeleted)
{
  espgw_event_t e;
  ASSERT_EQ(event(R"({"event":"sa-expire","kind":"hard","reason":"bytes","direction":"in",)"
                  R"("spi":"0x00005001","tunnel":"aws-a1","src":"203.0.113.1",)"
                  R"("dst":"169.254.10.1","protocol":"esp","origin":"plugin"})",
                  &e),
            ESPGW_EVENT_EXPIRE);
  EXPECT_TRUE(e.hard);
  EXPECT_TRUE(e.inbound);
  EXPECT_EQ(e.spi, 0x5001u);
  EXPECT_STREQ(e.dst, "169.254.10.1");
  EXPECT_STREQ(e.src, "203.0.113.1");
  EXPECT_STREQ(e.origin, "plugin");
  EXPECT_STREQ(e.reason, "bytes");
  ASSERT_EQ(event(R"({"event":"sa-expire","kind":"soft","reason":"seconds","direction":"out",)"
                  R"("spi":"0xc0000001","tunnel":"t","dst":"203.0.113.1"})",
                  &e),
            ESPGW_EVENT_EXPIRE);
  EXPECT_FALSE(e.hard);
  EXPECT_FALSE(e.inbound);
  EXPECT_EQ(e.spi, 0xc0000001u);
  EXPECT_STREQ(e.origin, "");
  ASSERT_EQ(event(R"({"event":"sa-deleted","direction":"out","spi":"0x00004001","tunnel":"a",)"
                  R"("reason":"hard-expire","src":"169.254.10.1","dst":"203.0.113.1","protocol":"esp"})",
                  &e),
            ESPGW_EVENT_DELETED);
  EXPECT_EQ(e.spi, 0x4001u);
  EXPECT_STREQ(e.reason, "hard-expire");
  // an espgw from before the events carried addresses: dst left empty for the caller to find
  ASSERT_EQ(event(R"({"event":"sa-expire","kind":"soft","reason":"bytes","direction":"out",)"
                  R"("spi":"0x00004001","tunnel":"aws-a1"})",
                  &e),
            ESPGW_EVENT_EXPIRE);
  EXPECT_STREQ(e.dst, "");
  EXPECT_EQ(e.spi, 0x4001u);
}

TEST(EspgwEvent, OthersAndMalformed)
{
  espgw_event_t e;
  EXPECT_EQ(event(R"({"event":"tunnel-state","tunnel":"a","up":false})", &e), ESPGW_EVENT_OTHER);
  EXPECT_EQ(event(R"({"ok":true,"subscribed":true,"id":1})", &e), ESPGW_EVENT_OTHER);
  const char *bad[] = {
      R"({"event":"sa-expire","kind":"hard","direction":"in"})",  // no spi
      R"({"event":"sa-expire","kind":"hard","direction":"in","spi":"0x5001","dst":"x"})",
      R"({"event":"sa-expire","kind":"medium","direction":"in","spi":"0x5001","dst":"1.2.3.4"})",
      R"({"event":"sa-expire","direction":"in","spi":"0x5001","dst":"1.2.3.4"})",  // no kind
      R"({"event":"sa-expire","kind":"soft","direction":"sideways","spi":"0x5001","dst":"1.2.3.4"})",
      R"({"event":"sa-expire","kind":"soft","direction":"in","spi":"5001","dst":"1.2.3.4"})",
      R"({"event":"sa-expire","kind":"soft","direction":"in","spi":"0x5001","dst":"1.2.3.4","protocol":"ah"})",
      R"({"event":"sa-deleted","direction":"in","spi":"0x5001","dst":"1.2.3.4","src":7})",
      R"({"event":"sa-expire","kind":"soft","direction":"in","spi":"0x5001","dst":"1.2.3.4")",
      R"({"event":7})",
      R"([])",
  };
  for (const char *b : bad) EXPECT_EQ(event(b, &e), ESPGW_EVENT_MALFORMED) << b;
}

// -------------------------------------------------------------- transport

TEST(EspgwTransport, LinesAcrossReadsTimeoutAndClose)
{
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  espgw_reader_t rd;
  espgw_reader_init(&rd, sv[0]);
  const char *line;
  size_t len;

  // two lines and half of a third in one write
  const std::string first = "{\"ok\":true,\"id\":1}\n{\"ok\":true,\"id\":2}\n{\"ok\":";
  ASSERT_EQ(write(sv[1], first.data(), first.size()), (ssize_t)first.size());
  ASSERT_EQ(espgw_read_line(&rd, espgw_now_ms() + 1000, &line, &len), 1);
  EXPECT_EQ(std::string(line, len), "{\"ok\":true,\"id\":1}");
  ASSERT_EQ(espgw_read_line(&rd, espgw_now_ms() + 1000, &line, &len), 1);
  EXPECT_EQ(std::string(line, len), "{\"ok\":true,\"id\":2}");
  // the third is incomplete: a deadline ends the wait
  int64_t t0 = espgw_now_ms();
  errno = 0;
  EXPECT_EQ(espgw_read_line(&rd, t0 + 100, &line, &len), -1);
  EXPECT_EQ(errno, ETIMEDOUT);
  EXPECT_GE(espgw_now_ms() - t0, 90);
  const std::string rest = "false,\"id\":3}\n";
  ASSERT_EQ(write(sv[1], rest.data(), rest.size()), (ssize_t)rest.size());
  ASSERT_EQ(espgw_read_line(&rd, espgw_now_ms() + 1000, &line, &len), 1);
  EXPECT_EQ(std::string(line, len), "{\"ok\":false,\"id\":3}");

  // a NUL byte is refused
  ASSERT_EQ(write(sv[1], "a\0b\n", 4), 4);
  EXPECT_EQ(espgw_read_line(&rd, espgw_now_ms() + 1000, &line, &len), -1);

  espgw_reader_reset(&rd);
  espgw_reader_init(&rd, sv[0]);
  close(sv[1]);
  EXPECT_EQ(espgw_read_line(&rd, espgw_now_ms() + 1000, &line, &len), 0);
  espgw_reader_reset(&rd);
  close(sv[0]);
}

TEST(EspgwTransport, SendToClosedPeerFails)
{
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  close(sv[1]);
  errno = 0;
  EXPECT_EQ(espgw_send_all(sv[0], "x\n", 2, espgw_now_ms() + 1000), -1);
  EXPECT_EQ(errno, EPIPE);
  close(sv[0]);
  EXPECT_EQ(espgw_connect("/nonexistent/espgw.sock"), -1);
}

}  // namespace
