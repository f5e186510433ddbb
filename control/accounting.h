// Accounting to the packet: the per-port, per-worker equations of
// dataplane/counters.h, checked on a consistent copy of each worker's
// counters, as JSON (stats) and text (the final report).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "dataplane/dataplane.h"

namespace espgw::control {

// How long snapshot_balance_counters waits for a worker to be between two
// poll iterations.
inline constexpr std::chrono::milliseconds kSnapshotPatience{200};

// Copies the balance-relevant counters (ports, dispositions) of one live
// worker block between two equal even update_seq values. Returns false when
// the worker kept updating for kSnapshotPatience (the copy is then the last,
// possibly mid-iteration one).
bool snapshot_balance_counters(const dataplane::WorkerCounters& live, dataplane::WorkerCounters& out);

// {"holds": bool, "ports": [per port, all workers summed], "workers": [per
// worker: {"worker", "consistent", "ports": [...]}]}; each port entry has the
// RX equation's terms, the TX equation's terms, "rx_holds", "tx_holds" and
// "equation" (a readable line).
nlohmann::json balance_json(const dataplane::Dataplane& dp, const std::vector<std::string>& port_names);

// The same as lines of text for the final report.
std::string balance_text(const nlohmann::json& balance);

}  // namespace espgw::control
