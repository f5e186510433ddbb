#include "control/json_codec.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <new>
#include <stdexcept>

#include "crypto/secret.h"

namespace espgw::control {
using nlohmann::json;

namespace {

// A request error: the message is what the client reads (never key bytes).
struct RequestError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The fields an operation accepts, besides "op" and "id".
void allow_only(const json& j, std::initializer_list<const char*> allowed, const std::string& where) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    bool ok = false;
    for (const char* a : allowed) ok = ok || k == a;
    if (!ok) throw RequestError(fmt::format("unknown field '{}'{}", k, where));
  }
}

const json* find(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() ? nullptr : &*it;
}

// A JSON integer (not a string, not negative, not a float) in 0..max.
uint64_t as_uint(const json& v, const std::string& name, uint64_t max) {
  if (!v.is_number_unsigned())
    throw RequestError(fmt::format("field '{}' must be a non-negative JSON integer", name));
  uint64_t x = v.get<uint64_t>();
  if (x > max) throw RequestError(fmt::format("field '{}': {} is larger than {}", name, x, max));
  return x;
}

std::optional<uint64_t> opt_uint(const json& j, const char* name, uint64_t max) {
  const json* v = find(j, name);
  if (!v) return std::nullopt;
  return as_uint(*v, name, max);
}

const std::string& as_string(const json& v, const std::string& name) {
  if (!v.is_string()) throw RequestError(fmt::format("field '{}' must be a string", name));
  return v.get_ref<const std::string&>();
}

const std::string& req_string(const json& j, const char* name) {
  const json* v = find(j, name);
  if (!v) throw RequestError(fmt::format("missing field '{}' (a string)", name));
  return as_string(*v, name);
}

std::optional<std::string> opt_string(const json& j, const char* name) {
  const json* v = find(j, name);
  if (!v) return std::nullopt;
  return as_string(*v, name);
}

bool opt_bool(const json& j, const char* name, bool dflt) {
  const json* v = find(j, name);
  if (!v) return dflt;
  if (!v->is_boolean()) throw RequestError(fmt::format("field '{}' must be true or false", name));
  return v->get<bool>();
}

uint32_t spi_field(const json& j) {
  const json* v = find(j, "spi");
  if (!v) throw RequestError("missing field 'spi'");
  if (v->is_string()) {
    auto spi = parse_spi_string(v->get_ref<const std::string&>());
    if (!spi)
      throw RequestError("field 'spi': not a number in the accepted form (a JSON integer, or \"0x\" and 1..8 hex digits)");
    return *spi;
  }
  if (!v->is_number_unsigned())
    throw RequestError("field 'spi' must be a non-negative JSON integer or \"0x\" and 1..8 hex digits");
  return static_cast<uint32_t>(as_uint(*v, "spi", 0xFFFFFFFFu));
}

SaDirection dir_field(const json& j) {
  const std::string& d = req_string(j, "direction");
  if (d == "in" || d == "inbound") return SaDirection::kInbound;
  if (d == "out" || d == "outbound") return SaDirection::kOutbound;
  throw RequestError("field 'direction': '" + d + "' is neither in nor out");
}

SaAlgo algo_field(const json& j) {
  auto a = opt_string(j, "algo");
  if (!a || *a == "aes128-gcm" || *a == "aes-128-gcm") return SaAlgo::kAes128Gcm;
  if (*a == "aes256-gcm" || *a == "aes-256-gcm") return SaAlgo::kAes256Gcm;
  throw RequestError("field 'algo': '" + *a + "' is not aes128-gcm or aes256-gcm");
}

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes the key straight into wiping storage; the message never shows it.
// `text` is what the pre-scan lifted out of the line (the JSON holds '0's).
crypto::SecretBytes key_field(const json& j, const WipingString* text) {
  if (!text) {
    req_string(j, "key");  // missing, or not a string: says which
    throw RequestError("field 'key' must be a string of hex digits");
  }
  std::string_view s(text->data(), text->size());
  size_t off = s.rfind("0x", 0) == 0 || s.rfind("0X", 0) == 0 ? 2 : 0;
  if ((s.size() - off) % 2) throw RequestError("field 'key': odd number of hex digits");
  crypto::SecretBytes out;
  out.reserve((s.size() - off) / 2);
  for (size_t i = off; i < s.size(); i += 2) {
    int hi = nibble(s[i]), lo = nibble(s[i + 1]);
    if (hi < 0 || lo < 0) throw RequestError("field 'key': not hex");
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

// {"sport":N,"dport":N}, both required, 1..65535. `sport`/`dport` are the
// UDP header's view of the packets of this SA: for an outbound SA sport is
// ours; for an inbound SA dport is ours.
UdpEncap encap_field(const json& e, SaDirection dir) {
  if (!e.is_object())
    throw RequestError("field 'encap' must be an object {\"sport\":N,\"dport\":N} (or false: plain ESP)");
  allow_only(e, {"sport", "dport"}, " in 'encap'");
  const json* sp = find(e, "sport");
  const json* dp = find(e, "dport");
  if (!sp || !dp) throw RequestError("field 'encap' needs both 'sport' and 'dport' (1..65535)");
  auto port = [](const json& v, const char* name) {
    uint64_t p = as_uint(v, std::string("encap.") + name, 65535);
    if (p == 0) throw RequestError(fmt::format("field 'encap.{}': 0 is not a port (1..65535)", name));
    return static_cast<uint16_t>(p);
  };
  uint16_t sport = port(*sp, "sport"), dport = port(*dp, "dport");
  return dir == SaDirection::kOutbound ? UdpEncap{sport, dport} : UdpEncap{dport, sport};
}

SaLifetime one_lifetime(const json& k, const std::string& where) {
  if (!k.is_object()) throw RequestError(fmt::format("field '{}' must be an object {{bytes, packets, seconds}}", where));
  allow_only(k, {"bytes", "packets", "seconds"}, " in '" + where + "'");
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  SaLifetime l;
  auto field = [&](const char* name) -> uint64_t {
    const json* v = find(k, name);
    return v ? as_uint(*v, where + "." + name, max) : 0;
  };
  l.bytes = field("bytes");
  l.packets = field("packets");
  l.seconds = field("seconds");
  return l;
}

// "lifetime": {"soft": {...}, "hard": {...}}, both optional.
void lifetime_field(const json& j, std::optional<SaLifetime>& soft, std::optional<SaLifetime>& hard) {
  const json* lt = find(j, "lifetime");
  if (!lt) return;
  if (!lt->is_object()) throw RequestError("field 'lifetime' must be an object {\"soft\": {...}, \"hard\": {...}}");
  allow_only(*lt, {"soft", "hard"}, " in 'lifetime'");
  if (const json* s = find(*lt, "soft")) soft = one_lifetime(*s, "lifetime.soft");
  if (const json* h = find(*lt, "hard")) hard = one_lifetime(*h, "lifetime.hard");
}

std::vector<Ipv4Prefix> prefixes_field(const json& j, const char* name) {
  std::vector<Ipv4Prefix> out;
  const json* v = find(j, name);
  if (!v) return out;
  if (!v->is_array()) throw RequestError(fmt::format("field '{}' must be a list of prefixes", name));
  for (const auto& p : *v) {
    lpm::Prefix4 x = lpm::parse_prefix4(as_string(p, name));
    out.push_back({x.addr, x.len});
  }
  return out;
}

uint32_t ipv4_field(const json& v, const char* name) {
  in_addr a{};
  if (inet_pton(AF_INET, as_string(v, name).c_str(), &a) != 1)
    throw RequestError(fmt::format("field '{}': not an IPv4 address (dotted quad)", name));
  return ntohl(a.s_addr);
}

std::optional<uint32_t> opt_ipv4(const json& j, const char* name) {
  const json* v = find(j, name);
  if (!v) return std::nullopt;
  return ipv4_field(*v, name);
}

SaSpec sa_spec_of(const json& j, const WipingString* key_text) {
  allow_only(j, {"op", "id", "direction", "spi", "tunnel", "src", "dst", "algo", "key", "esn", "replay_window", "seq",
                 "encap", "lifetime", "local_selectors", "remote_selectors", "origin"},
             "");
  SaSpec s;
  s.direction = dir_field(j);
  s.spi = spi_field(j);
  // The tunnel by name, or by the SA's outer addresses (src and dst).
  s.src = opt_ipv4(j, "src");
  s.dst = opt_ipv4(j, "dst");
  if (auto t = opt_string(j, "tunnel")) s.tunnel = *t;
  else if (!s.src || !s.dst)
    throw RequestError("missing field 'tunnel' (or both 'src' and 'dst', the SA's outer addresses)");
  s.algo = algo_field(j);
  s.esn = opt_bool(j, "esn", false);
  if (auto w = opt_uint(j, "replay_window", 0xFFFFFFFFu)) s.replay_window = static_cast<uint32_t>(*w);
  s.initial_seq = opt_uint(j, "seq", std::numeric_limits<uint64_t>::max());
  if (const json* e = find(j, "encap")) {
    if (e->is_boolean() && !e->get<bool>()) s.plain_esp = true;  // "encap": false, plain ESP said explicitly
    else s.encap = encap_field(*e, s.direction);
  }
  // Who installs it: the socket's clients, or an IKE daemon's plugin (whose
  // flush-sas removes only its own). config and xfrm are not a client's to claim.
  s.origin = SaOrigin::kSocket;
  if (auto o = opt_string(j, "origin")) {
    if (*o == "plugin") s.origin = SaOrigin::kPlugin;
    else if (*o != "socket") throw RequestError("field 'origin': '" + *o + "' is neither socket nor plugin");
  }
  std::optional<SaLifetime> soft, hard;
  lifetime_field(j, soft, hard);
  s.soft = soft.value_or(SaLifetime{});
  s.hard = hard.value_or(SaLifetime{});
  s.local_selectors = prefixes_field(j, "local_selectors");
  s.remote_selectors = prefixes_field(j, "remote_selectors");
  s.keymat = key_field(j, key_text);  // last: nothing after it can throw and leave a copy behind
  return s;
}

// delete-sa / query-sa: direction, SPI, and the tunnel and/or dst (src is
// accepted, as charon has it, and not needed: dst names the identity).
SaName sa_name_of(const json& j) {
  allow_only(j, {"op", "id", "direction", "spi", "tunnel", "src", "dst"}, "");
  SaName n;
  n.direction = dir_field(j);
  n.spi = spi_field(j);
  n.tunnel = opt_string(j, "tunnel");
  opt_ipv4(j, "src");
  n.dst = opt_ipv4(j, "dst");
  return n;
}

SaUpdate sa_update_of(const json& j) {
  allow_only(j, {"op", "id", "direction", "spi", "tunnel", "src", "dst", "encap", "remote", "lifetime"}, "");
  SaUpdate u;
  u.direction = dir_field(j);
  u.spi = spi_field(j);
  opt_ipv4(j, "src");  // accepted, not needed (see sa_name_of)
  u.dst = opt_ipv4(j, "dst");
  if (auto t = opt_string(j, "tunnel")) u.tunnel = *t;
  else if (!u.dst) throw RequestError("missing field 'tunnel' (or 'dst', the SA's destination address)");
  if (const json* e = find(j, "encap")) u.encap = encap_field(*e, u.direction);
  if (const json* r = find(j, "remote")) u.remote_addr = ipv4_field(*r, "remote");
  lifetime_field(j, u.soft, u.hard);
  if (!u.encap && !u.remote_addr && !u.soft && !u.hard)
    throw RequestError("update-sa: nothing to change (give encap, remote or lifetime)");
  return u;
}

RouteRequest route_of(const json& j) {
  allow_only(j, {"op", "id", "prefix", "via"}, "");
  RouteRequest r;
  r.prefix = lpm::parse_prefix4(req_string(j, "prefix"));
  const json* via = find(j, "via");
  if (!via || !via->is_array()) throw RequestError("missing field 'via' (a list of {tunnel, priority})");
  for (const auto& h : *via) {
    if (!h.is_object()) throw RequestError("field 'via': entries are {tunnel, priority}");
    allow_only(h, {"tunnel", "priority"}, " in 'via'");
    const json* prio = find(h, "priority");
    if (!prio) throw RequestError("field 'via': missing 'priority'");
    r.via.push_back({req_string(h, "tunnel"), static_cast<uint32_t>(as_uint(*prio, "priority", 65535))});
  }
  return r;
}

// Wipes the decoded key string inside the parsed request (the request line
// itself is wiped by the caller).
void wipe_key(json& req) {
  auto it = req.find("key");
  if (it != req.end() && it->is_string()) crypto::SecretBytes::wipe(it->get_ref<std::string&>());
}

}  // namespace

JsonCodec::Prescan JsonCodec::prescan(std::string_view line) {
  Prescan out;
  int depth = 0;
  bool in_string = false, escaped = false;
  size_t str_start = 0;         // first byte inside the current string
  std::string_view member;      // the last string closed at depth 1
  bool member_done = false;     // ...and nothing but spaces since
  bool want_key_value = false;  // after  "key" :
  bool in_key_value = false;
  for (size_t i = 0; i < line.size(); i++) {
    const char c = line[i];
    if (c == '\0') {
      out.error = fmt::format("NUL byte at offset {}: a request is one line of JSON text", i);
      return out;
    }
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
        if (in_key_value) {
          out.error = "field 'key': escapes are not allowed in a key (hex digits only)";
          return out;
        }
      } else if (c == '"') {
        in_string = false;
        if (in_key_value) {
          in_key_value = false;
          out.key_pos = str_start;
          out.key_len = i - str_start;
        } else if (depth == 1) {
          member = line.substr(str_start, i - str_start);
          member_done = true;
        }
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    const bool after_member = member_done;
    member_done = false;
    if (c == ':' && after_member && member == "key") {
      if (out.key_pos != std::string_view::npos) {
        out.error = "field 'key' given twice";
        return out;
      }
      want_key_value = true;
      continue;
    }
    if (c == '"') {
      in_string = true;
      str_start = i + 1;
      in_key_value = want_key_value && depth == 1;
      want_key_value = false;
      continue;
    }
    want_key_value = false;
    if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) {
        out.error = fmt::format("nested deeper than {} levels", kMaxDepth);
        return out;
      }
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return out;
}

ControlReply JsonCodec::handle_line(WipingString& line) noexcept {
  ControlReply out;
  json req;
  try {
    Prescan pre = prescan(std::string_view(line.data(), line.size()));
    if (!pre.error.empty()) {
      out.body = {{"ok", false}, {"error", "refused before parsing: " + pre.error}};
      return out;
    }
    std::optional<WipingString> key_text;
    if (pre.key_pos != std::string_view::npos) {
      key_text.emplace(line.data() + pre.key_pos, pre.key_len);
      std::fill_n(line.begin() + static_cast<std::ptrdiff_t>(pre.key_pos), pre.key_len, '0');
    }
    // A member given twice is ambiguous ({"spi":1,"spi":2}): refused, not
    // "the last one wins". Nesting is at most kMaxDepth (pre-scan).
    std::vector<std::vector<std::string>> members;
    std::string duplicate;
    auto watch = [&](int, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::object_start) members.emplace_back();
      else if (event == json::parse_event_t::object_end && !members.empty()) members.pop_back();
      else if (event == json::parse_event_t::key && !members.empty()) {
        auto& seen = members.back();
        const std::string& k = parsed.get_ref<const std::string&>();
        if (std::find(seen.begin(), seen.end(), k) != seen.end()) {
          if (duplicate.empty()) duplicate = k;
        } else {
          seen.push_back(k);
        }
      }
      return true;
    };
    req = json::parse(line.begin(), line.end(), watch, /*allow_exceptions=*/false);
    if (req.is_discarded()) {
      out.body = {{"ok", false}, {"error", "malformed JSON"}};
      return out;
    }
    if (!duplicate.empty()) {
      out.body = {{"ok", false}, {"error", "field '" + duplicate + "' given twice"}};
      return out;
    }
    if (!req.is_object()) {
      out.body = {{"ok", false}, {"error", "a request is a JSON object"}};
      return out;
    }
    out.body = dispatch(req, key_text ? &*key_text : nullptr, out.subscribe);
  } catch (const std::bad_alloc&) {
    out = {};
    try {
      out.body = {{"ok", false}, {"error", "out of memory while serving the request"}};
    } catch (...) {
    }
  } catch (const SaNotFound& e) {
    out = {};
    try {
      out.body = {{"ok", false}, {"error", e.what()}, {"code", "not-found"}};
    } catch (...) {
    }
  } catch (const std::exception& e) {
    out = {};
    try {
      out.body = {{"ok", false}, {"error", e.what()}};
    } catch (...) {
    }
  } catch (...) {
    out = {};
    try {
      out.body = {{"ok", false}, {"error", "internal error"}};
    } catch (...) {
    }
  }
  try {
    if (req.is_object()) {
      wipe_key(req);
      if (auto it = req.find("id"); it != req.end()) out.body["id"] = *it;
    }
  } catch (...) {
  }
  return out;
}

json JsonCodec::dispatch(json& req, const WipingString* key_text, bool& subscribe) {
  const json* opv = find(req, "op");
  if (!opv) throw RequestError("missing field 'op'");
  if (!opv->is_string()) throw RequestError("field 'op' must be a string");
  const std::string op = opv->get<std::string>();
  const json ok = {{"ok", true}};

  if (op == "ping" || op == "stats" || op == "tunnels" || op == "list-sas" || op == "sas" || op == "routes" ||
      op == "neighbors" || op == "subscribe")
    allow_only(req, {"op", "id"}, "");
  if (op == "ping") return ok;
  if (op == "subscribe") {
    subscribe = true;
    return {{"ok", true}, {"subscribed", true}};
  }
  if (op == "stats") return ops_.stats();
  if (op == "tunnels") return {{"ok", true}, {"tunnels", ops_.tunnels()}};
  if (op == "list-sas" || op == "sas") return {{"ok", true}, {"sas", ops_.list_sas()}, {"larval", ops_.larval()}};
  if (op == "routes") return {{"ok", true}, {"routes", ops_.routes()}};
  if (op == "neighbors") return {{"ok", true}, {"neighbors", ops_.neighbors()}};

  if (op == "tunnel-down" || op == "tunnel-up") {
    allow_only(req, {"op", "id", "tunnel"}, "");
    ops_.set_tunnel_admin(req_string(req, "tunnel"), op == "tunnel-up");
    return ok;
  }
  if (op == "add-sa" || op == "replace-sa") {
    SaSpec spec = sa_spec_of(req, key_text);
    wipe_key(req);
    if (op == "add-sa") ops_.add_sa(spec, spec.origin);
    else ops_.replace_sa(spec, spec.origin);  // add-or-update: SaDatabase::reconcile
    return ok;
  }
  if (op == "update-sa") {
    ops_.update_sa(sa_update_of(req));
    return ok;
  }
  if (op == "delete-sa") {
    if (ops_.delete_sa(sa_name_of(req))) return {{"ok", true}, {"larval", true}};
    return ok;
  }
  if (op == "flush-sas") {
    allow_only(req, {"op", "id", "origin"}, "");
    std::optional<SaOrigin> origin;
    if (auto o = opt_string(req, "origin")) {
      for (SaOrigin x : {SaOrigin::kConfig, SaOrigin::kSocket, SaOrigin::kXfrm, SaOrigin::kPlugin})
        if (*o == to_string(x)) origin = x;
      if (!origin) throw RequestError("field 'origin': '" + *o + "' is not one of config, socket, xfrm, plugin");
    }
    ControlOps::FlushResult r = ops_.flush_sas(origin);
    return {{"ok", true}, {"deleted", r.deleted}, {"larval", r.larval}};
  }
  if (op == "alloc-spi") {
    allow_only(req, {"op", "id", "dst", "src", "timeout_s"}, "");
    const json* dst = find(req, "dst");
    if (!dst) throw RequestError("missing field 'dst' (our address the inbound SA will be addressed to)");
    std::optional<uint32_t> timeout;
    if (auto t = opt_uint(req, "timeout_s", 0xFFFFFFFFu)) timeout = static_cast<uint32_t>(*t);
    SpiGrant g = ops_.alloc_spi(ipv4_field(*dst, "dst"), opt_ipv4(req, "src"), timeout);
    return {{"ok", true}, {"spi", fmt::format("0x{:08x}", g.spi)}, {"expires_in_s", g.expires_in_s}};
  }
  if (op == "query-sa") {
    json reply = ops_.query_sa(sa_name_of(req));
    reply["ok"] = true;
    return reply;
  }
  if (op == "add-route" || op == "replace-route") {
    RouteRequest r = route_of(req);
    if (op == "add-route") ops_.add_route(r);
    else ops_.replace_route(r);
    return ok;
  }
  if (op == "delete-route") {
    allow_only(req, {"op", "id", "prefix"}, "");
    ops_.delete_route(lpm::parse_prefix4(req_string(req, "prefix")));
    return ok;
  }
  throw RequestError("unknown operation '" + op + "'");
}

}  // namespace espgw::control
