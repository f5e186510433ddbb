#include "control/telemetry.h"

#include <fmt/format.h>
#include <rte_telemetry.h>

#include <cctype>
#include <cerrno>
#include <mutex>
#include <string>

namespace espgw::control {
using nlohmann::json;

struct Telemetry::Snapshot {
  std::mutex mu;
  bool live = false;
  json stats, sas, routes;
};

namespace {
// Telemetry callbacks take no user pointer: one gateway per process.
std::shared_ptr<Telemetry::Snapshot> g_snapshot;

// DPDK 22.11 telemetry: dict keys may hold only [A-Za-z0-9_/], and only
// arrays nest. List commands return one readable line per item; the
// singular commands (/espgw/tunnel,NAME and /espgw/sa,DIR:SPI) return one
// item as a dict with nested objects flattened to a_b keys.
std::string tel_key(std::string k) {
  for (char& c : k)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '/') c = '_';
  return k;
}

void put_scalar(rte_tel_data* d, const std::string& key, const json& v) {
  std::string k = tel_key(key);
  if (v.is_boolean()) rte_tel_data_add_dict_string(d, k.c_str(), v.get<bool>() ? "true" : "false");
  else if (v.is_number_unsigned()) rte_tel_data_add_dict_u64(d, k.c_str(), v.get<uint64_t>());
  else if (v.is_number_integer()) rte_tel_data_add_dict_int(d, k.c_str(), static_cast<int>(v.get<int64_t>()));
  else if (v.is_string()) rte_tel_data_add_dict_string(d, k.c_str(), v.get<std::string>().c_str());
  else if (v.is_null()) rte_tel_data_add_dict_string(d, k.c_str(), "-");
  else rte_tel_data_add_dict_string(d, k.c_str(), v.dump().c_str());
}

void flatten(const json& obj, const std::string& prefix, rte_tel_data* d) {
  for (auto& [k, v] : obj.items()) {
    std::string key = prefix.empty() ? k : prefix + "_" + k;
    if (v.is_object()) flatten(v, key, d);
    else put_scalar(d, key, v);
  }
}

std::string tunnel_line(const json& t) {
  // The second word is the operational state (what routing uses).
  return fmt::format("{} {} spi={} out={}/{} in={}/{} asymmetric={} admin={}", t["name"].get<std::string>(),
                     t["up"].get<bool>() ? "up" : "down", t.value("out_spi", std::string("-")),
                     t["out"]["packets"].get<uint64_t>(), t["out"]["bytes"].get<uint64_t>(),
                     t["in"]["packets"].get<uint64_t>(), t["in"]["bytes"].get<uint64_t>(),
                     t["asymmetric"].get<uint64_t>(), t.value("admin", std::string("-")));
}

std::string sa_id(const json& sa) { return sa["direction"].get<std::string>() + ":" + sa["spi"].get<std::string>(); }

std::string sa_line(const json& sa) {
  return fmt::format("{} tunnel={} {} key={} packets={} bytes={}{}", sa_id(sa), sa["tunnel"].get<std::string>(),
                     sa["algo"].get<std::string>(), sa["key_fingerprint"].get<std::string>(),
                     sa["packets"].get<uint64_t>(), sa["bytes"].get<uint64_t>(),
                     sa.value("current", false) ? " current" : "");
}

std::string route_line(const json& r) {
  std::string via;
  for (const auto& h : r["via"])
    via += fmt::format("{}{}/{}", via.empty() ? "" : ",", h["tunnel"].get<std::string>(), h["priority"].get<uint32_t>());
  return fmt::format("{} active={} via={}", r["prefix"].get<std::string>(),
                     r["active"].is_null() ? "-" : r["active"].get<std::string>(), via);
}

template <class F>
int with_snapshot(F f) {
  auto snap = g_snapshot;
  if (!snap) return -ENOENT;
  std::lock_guard<std::mutex> lock(snap->mu);
  if (!snap->live) return -ENOENT;
  return f(*snap);
}

template <class Line>
int tel_lines(const json& list, rte_tel_data* d, Line line) {
  rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
  for (const auto& item : list) rte_tel_data_add_array_string(d, line(item).c_str());
  return 0;
}

int tel_tunnels(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Telemetry::Snapshot& s) { return tel_lines(s.stats["tunnels"], d, tunnel_line); });
}
int tel_sas(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Telemetry::Snapshot& s) { return tel_lines(s.sas, d, sa_line); });
}
int tel_routes(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Telemetry::Snapshot& s) { return tel_lines(s.routes, d, route_line); });
}
int tel_tunnel(const char*, const char* params, rte_tel_data* d) {
  return with_snapshot([&](Telemetry::Snapshot& s) {
    for (const auto& t : s.stats["tunnels"])
      if (params && t["name"] == params) {
        rte_tel_data_start_dict(d);
        flatten(t, "", d);
        return 0;
      }
    return -EINVAL;
  });
}
int tel_sa(const char*, const char* params, rte_tel_data* d) {
  return with_snapshot([&](Telemetry::Snapshot& s) {
    for (const auto& sa : s.sas)
      if (params && sa_id(sa) == params) {
        rte_tel_data_start_dict(d);
        flatten(sa, "", d);
        return 0;
      }
    return -EINVAL;
  });
}
int tel_stats(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Telemetry::Snapshot& s) {
    rte_tel_data_start_dict(d);
    json flat = s.stats;
    json ports = flat["ports"];
    for (const char* k : {"tunnels", "sas", "ports", "ok"}) flat.erase(k);
    flatten(flat, "", d);
    for (const auto& p : ports) flatten(json{{"rx", p["rx"]}, {"tx", p["tx"]}}, "port_" + p["name"].get<std::string>(), d);
    return 0;
  });
}
}  // namespace

Telemetry::Telemetry() : snapshot_(std::make_shared<Snapshot>()) {
  g_snapshot = snapshot_;
  rte_telemetry_register_cmd("/espgw/tunnels", tel_tunnels, "espgw tunnels: admin/oper state, active SPI, counters");
  rte_telemetry_register_cmd("/espgw/sas", tel_sas, "espgw SAs (key fingerprints only, never keys)");
  rte_telemetry_register_cmd("/espgw/routes", tel_routes, "espgw routes: prefix -> active tunnel, next hops");
  rte_telemetry_register_cmd("/espgw/stats", tel_stats, "espgw counters: ports, drops by reason, exception path");
  rte_telemetry_register_cmd("/espgw/tunnel", tel_tunnel, "one tunnel's details. Parameters: tunnel name");
  rte_telemetry_register_cmd("/espgw/sa", tel_sa, "one SA's details. Parameters: in:0xSPI or out:0xSPI");
}

Telemetry::~Telemetry() {
  std::lock_guard<std::mutex> lock(snapshot_->mu);
  snapshot_->live = false;
}

void Telemetry::publish(json stats, json sas, json routes) {
  std::lock_guard<std::mutex> lock(snapshot_->mu);
  snapshot_->stats = std::move(stats);
  snapshot_->sas = std::move(sas);
  snapshot_->routes = std::move(routes);
  snapshot_->live = true;
}

}  // namespace espgw::control
