// libFuzzer harness: control requests through JsonCodec::handle_line (the
// function the control socket calls for every line) against the real
// ControlOps / SaDatabase / route table of the fuzz gateway (fuzz_gateway.h:
// tunnels t1..t3, routes, static SAs), so the fuzzer reaches the pre-scan,
// the JSON parser, the strict field validation, the SA validator and every
// operation.
//
// An input is up to 16 request lines (split at '\n'). Checked per line,
// beyond "no crash" (handle_line is noexcept: a throw would terminate):
//   - exactly one reply, a JSON object with a boolean "ok", which the socket
//     can serialise (invalid UTF-8 replaced, as control_server.cpp does);
//   - a refused request (ok false) changes no state: list-sas (less each
//     SA's age_seconds), the SPI reservations, routes and tunnels are the
//     same before and after.
// After each input the harness undoes what the accepted requests did where
// it can (socket and plugin SAs and SPI reservations deleted, routes and
// admin states restored); the SA
// database remembers every key ever installed (by design: a key is never
// installed twice), so a line that adds an SA succeeds the first time only.
#include <set>
#include <string>

#include "control/control_ops.h"
#include "control/json_codec.h"
#include "tests/fuzz/fuzz_gateway.h"

namespace {
using espgw::control::ControlOps;
using espgw::control::JsonCodec;
using espgw::control::WipingString;
using nlohmann::json;

json state(ControlOps& ops) {
  json sas = ops.list_sas();
  for (auto& s : sas) s.erase("age_seconds");
  json larval = ops.larval();  // SPI reservations (alloc-spi)
  for (auto& l : larval)
    if (l.is_object()) l.erase("expires_in_s");
  return {{"sas", sas}, {"larval", larval}, {"routes", ops.routes()}, {"tunnels", ops.tunnels()}};
}

[[noreturn]] void fail(const std::string& what, const std::string& line) {
  fuzz::fail(what + "\n  request: " + json(line).dump(-1, ' ', true, json::error_handler_t::replace));
}

json g_baseline;
JsonCodec* g_codec;

void restore(ControlOps& ops) {
  ops.flush_sas(espgw::control::SaOrigin::kPlugin);  // the plugin's SAs and every SPI reservation
  ops.delete_all_sas(espgw::control::SaOrigin::kSocket, "fuzz reset");
  std::set<std::string> base;
  for (const auto& r : g_baseline["routes"]) base.insert(r["prefix"].get<std::string>());
  for (const auto& r : ops.routes())
    if (!base.count(r["prefix"].get<std::string>())) ops.delete_route(espgw::lpm::parse_prefix4(r["prefix"].get<std::string>()));
  for (const auto& r : g_baseline["routes"]) {
    espgw::control::RouteRequest rq;
    rq.prefix = espgw::lpm::parse_prefix4(r["prefix"].get<std::string>());
    for (const auto& h : r["via"]) rq.via.push_back({h["tunnel"].get<std::string>(), h["priority"].get<uint32_t>()});
    ops.replace_route(rq);
  }
  for (const auto& t : g_baseline["tunnels"]) ops.set_tunnel_admin(t["name"].get<std::string>(), t["admin_up"].get<bool>());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto& g = fuzz::FuzzGateway::instance();
  g_codec = new JsonCodec(g.gateway().ops());
  g_baseline = state(g.gateway().ops());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ControlOps& ops = fuzz::FuzzGateway::instance().gateway().ops();
  const char* p = reinterpret_cast<const char*>(data);
  const char* end = p + size;
  json before = state(ops);  // each line's "after" is the next line's "before"
  for (int n = 0; n < 16 && p < end; n++) {
    const char* nl = static_cast<const char*>(memchr(p, '\n', size_t(end - p)));
    const char* e = nl ? nl : end;
    WipingString line(p, size_t(e - p));
    const std::string shown(p, size_t(e - p));
    p = nl ? nl + 1 : end;
    espgw::control::ControlReply r = g_codec->handle_line(line);
    if (!r.body.is_object() || !r.body.contains("ok") || !r.body["ok"].is_boolean())
      fail("reply is not an object with a boolean ok: " + r.body.dump(-1, ' ', true, json::error_handler_t::replace),
           shown);
    (void)r.body.dump(-1, ' ', false, json::error_handler_t::replace);  // what the socket sends
    json after = state(ops);
    if (!r.body["ok"].get<bool>() && after != before)
      fail("a refused request changed state: " + r.body.dump(-1, ' ', true, json::error_handler_t::replace) +
               "\n  before: " + before.dump() + "\n  after:  " + after.dump(),
           shown);
    before = std::move(after);
  }
  if (before != g_baseline) restore(ops);
  return 0;
}
