// What --check must refuse (or warn about) before the daemon starts ports:
// the mbuf pool for every worker's rings, file size and type, the SA
// validator with the entry's position, inbound SAs no route can accept.
// The last tests run the real `espgw --check`.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "control/config.h"
#include "dataplane/counters.h"

namespace espgw::control {
namespace {

// Two ports, one worker pinned, one tunnel with both SAs.
const char* kConfig = R"(eal: [-l, "0,1", --no-huge]
workers: [1]
mbufs: 16384
ports:
  - { name: lan, device: "net_null0", role: protected, addresses: [10.0.0.1], peer_ip: 10.0.0.2 }
  - { name: wan, device: "net_null1", role: unprotected, addresses: [198.51.100.10] }
tunnels:
  - { name: t1, port: wan, local: 198.51.100.10, remote: 203.0.113.1 }
routes:
  - { prefix: 172.31.0.0/16, via: [ { tunnel: t1, priority: 10 } ] }
sas:
  - { direction: out, spi: 0x1001, tunnel: t1, algo: aes128-gcm, key: "0x000102030405060708090a0b0c0d0e0f10111213" }
  - { direction: in,  spi: 0x2001, tunnel: t1, algo: aes128-gcm, key: "0x101112131415161718191a1b1c1d1e1f20212223" }
)";

const char* kInboundEntry =
    R"(spi: 0x2001, tunnel: t1, algo: aes128-gcm, key: "0x101112131415161718191a1b1c1d1e1f20212223" })";
const char* kInboundEntry16 =
    R"(spi: 0x2001, tunnel: t1, algo: aes128-gcm, key: "0x101112131415161718191a1b1c1d1e1f20212223", replay_window: 16 })";

std::string replace(std::string s, const std::string& from, const std::string& to) {
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted:\n" << text;
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(ConfigMbufs, EveryWorkerHasItsOwnRingsOnEveryPort) {
  // 4 workers x 3 ports (the exception port too): 4 x 3 x 2048 = 24576 in
  // rings alone; 16384 passed the old check (sum of one rx + tx per port).
  std::string four = replace(replace(kConfig, "workers: [1]", "workers: [1, 2, 3, 4]"), R"(-l, "0,1")",
                             R"(-l, "0-4")");
  four += "exception: { enabled: true, device: \"net_null2\" }\n";
  std::string e = error_of(four);
  EXPECT_TRUE(has(e, "t.yaml:3:8: mbufs: 16384 mbufs is too small: 27520 needed = 4 worker(s) x 6144")) << e;
  EXPECT_TRUE(has(e, "5 lcores x 384 (mempool caches)")) << e;
  GatewayConfig ok = parse_config(replace(four, "mbufs: 16384", "mbufs: 27520"));
  EXPECT_EQ(ok.mbufs, 27520u);
  EXPECT_TRUE(has(error_of(replace(four, "mbufs: 16384", "mbufs: 27519")), "27520 needed"));
}

TEST(ConfigMbufs, WorkerCountFromTheEalLcoreList) {
  std::string no_workers = replace(kConfig, "workers: [1]\n", "");
  GatewayConfig c = parse_config(no_workers);
  EXPECT_EQ(configured_workers(c), 1u);
  for (auto [eal, workers] : {std::pair{R"(-l, "0-3")", 3u}, std::pair{R"(-l, "0,2,4,6")", 3u},
                              std::pair{R"(--lcores, "0@0,1@1,2@0")", 2u}, std::pair{R"(-c, "0xf")", 3u},
                              std::pair{R"("-l0-7")", 7u}, std::pair{R"("--lcores=(0-1)@0,2@1")", 2u}}) {
    GatewayConfig g = parse_config(replace(replace(no_workers, R"(-l, "0,1")", eal), "mbufs: 16384", "mbufs: 100000"));
    EXPECT_EQ(configured_workers(g), workers) << eal;
  }
  // 7 workers from the lcore list need more than 16384.
  EXPECT_TRUE(has(error_of(replace(no_workers, R"(-l, "0,1")", R"(-l, "0-7")")), "7 worker(s) x 4096")) << "";
  EXPECT_TRUE(has(error_of(replace(no_workers, R"(-l, "0,1")", R"(-l, "0")")), "no worker lcore"));
  // workers: must be enabled lcores other than the main one (init_eal refuses them otherwise).
  EXPECT_TRUE(has(error_of(replace(kConfig, R"(-l, "0,1")", R"(-l, "0,2")")), "lcore 1 is not an enabled worker lcore"));
  EXPECT_TRUE(has(error_of(replace(kConfig, "workers: [1]", "workers: [0]")), "lcore 0 is not an enabled worker lcore"));
}

TEST(ConfigMbufs, UnpinnedWorkerCountIsCheckedAgainstThisHost) {
  std::string unpinned = replace(replace(kConfig, "workers: [1]\n", ""), R"(-l, "0,1", )", "");
  GatewayConfig c = parse_config(unpinned);
  EXPECT_FALSE(configured_workers(c));
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  size_t cpus = static_cast<size_t>(CPU_COUNT(&set));
  size_t workers = cpus > 1 ? cpus - 1 : 1;
  c.mbufs = static_cast<uint32_t>(mbufs_needed(c, workers));
  EXPECT_NO_THROW(check_on_this_host(c, "t.yaml"));
  c.mbufs -= 1;
  try {
    check_on_this_host(c, "t.yaml");
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(has(e.what(), "EAL uses every CPU here")) << e.what();
  }
}

TEST(ConfigSas, TheLoaderRunsTheSaValidatorWithTheEntrysPosition) {
  // replay_window 16 used to pass --check and fail in the daemon, without a position.
  std::string e = error_of(replace(kConfig, kInboundEntry, kInboundEntry16));
  EXPECT_TRUE(has(e, "t.yaml:13:5: sas[1]: replay_window: 16 is neither 0 (off) nor in 32..4096")) << e;
  e = error_of(replace(kConfig, "0x000102030405060708090a0b0c0d0e0f10111213\" }\n  - { direction: in",
                       "0x0000000000000000000000000000000010111213\" }\n  - { direction: in"));
  EXPECT_TRUE(has(e, "t.yaml:12:5: sas[0]: key: the AES key is all zeros")) << e;
  EXPECT_FALSE(has(e, "10111213")) << e;
  // The position travels with the entry, for the daemon's messages.
  GatewayConfig c = parse_config(kConfig, "t.yaml");
  EXPECT_EQ(c.sas[1].position, "t.yaml:13:5");
}

TEST(ConfigLimits, TheDataplanesTablesAreCheckedAtLoad) {
  std::string nine = replace(kConfig, "addresses: [198.51.100.10] }",
                             "addresses: [198.51.100.10, 198.51.100.11, 198.51.100.12, 198.51.100.13, 198.51.100.14, "
                             "198.51.100.15, 198.51.100.16, 198.51.100.17, 198.51.100.18] }");
  EXPECT_TRUE(has(error_of(nine), "ports[1].addresses: 9 addresses; at most 8 per port"));
  std::string ports = kConfig;
  for (int i = 2; i < 8; i++)
    ports = replace(ports, "tunnels:\n", "  - { name: p" + std::to_string(i) + ", device: \"net_null1" +
                                             std::to_string(i) + "\", role: unprotected }\ntunnels:\n");
  GatewayConfig eight = parse_config(replace(ports, "mbufs: 16384", "mbufs: 40000"));
  EXPECT_EQ(eight.ports.size(), 8u);
  std::string with_exception = replace(ports, "mbufs: 16384", "mbufs: 40000") + "exception: { enabled: true, device: net_tap9 }\n";
  EXPECT_TRUE(has(error_of(with_exception), "9 ports (the exception port included); at most 8"));
}

// A YAML alias is read as the value it names: an SA that takes another's key
// through one is refused like a key written twice (one key both ways).
TEST(ConfigSas, AKeySharedThroughAnAliasIsReadAndRefused) {
  std::string text = replace(replace(kConfig, R"(key: "0x000102030405060708090a0b0c0d0e0f10111213" }
  - { direction: in)", R"(key: &k "0x000102030405060708090a0b0c0d0e0f10111213" }
  - { direction: in)"), kInboundEntry, R"(spi: 0x2001, tunnel: t1, algo: aes128-gcm, key: *k })");
  std::string e = error_of(text);
  EXPECT_TRUE(has(e, "sas[1].key: the same key || salt as sas[0] (outbound)")) << e;
  EXPECT_TRUE(has(e, "one key in both directions repeats GCM nonces")) << e;
}

TEST(ConfigSas, EncapComesFromTheTunnel) {
  GatewayConfig c = parse_config(replace(kConfig, "remote: 203.0.113.1 }", "remote: 203.0.113.1, udp_encap: true }"));
  EXPECT_TRUE(c.tunnels[0].udp_encap);
  EXPECT_EQ(c.sas.size(), 2u);
}

// The warnings other than the one every file with a static outbound SA gets.
std::vector<std::string> other_warnings(const GatewayConfig& c) {
  std::vector<std::string> out;
  for (const auto& w : c.warnings)
    if (!has(w, "static outbound SA")) out.push_back(w);
  return out;
}

TEST(ConfigWarnings, InboundOnlyRouteBasedSetupIsWarnedAbout) {
  EXPECT_TRUE(other_warnings(parse_config(kConfig)).empty());
  // No outbound SA: the route to the senders can never be active.
  std::string inbound_only = replace(
      kConfig,
      "  - { direction: out, spi: 0x1001, tunnel: t1, algo: aes128-gcm, key: "
      "\"0x000102030405060708090a0b0c0d0e0f10111213\" }\n",
      "");
  GatewayConfig c = parse_config(inbound_only, "t.yaml");
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_TRUE(has(c.warnings[0], "t.yaml:12:5: sas[0] (inbound SPI 0x00002001 on t1)")) << c.warnings[0];
  EXPECT_TRUE(has(c.warnings[0], "dropped as 'policy'")) << c.warnings[0];
  // No route at all.
  GatewayConfig r = parse_config(replace(kConfig, "  - { prefix: 172.31.0.0/16, via: [ { tunnel: t1, priority: 10 } ] }\n",
                                         "  []\n"));
  ASSERT_EQ(other_warnings(r).size(), 1u);
  EXPECT_TRUE(has(other_warnings(r)[0], "no route covers its senders")) << other_warnings(r)[0];
  // The tunnel starts administratively down: same.
  GatewayConfig d = parse_config(replace(kConfig, "remote: 203.0.113.1 }", "remote: 203.0.113.1, up: false }"));
  EXPECT_EQ(other_warnings(d).size(), 1u);
}

// After a restart a static outbound SA sends sequence 1, 2, ... again under
// the same key (the daemon keeps no state): --check says so.
TEST(ConfigWarnings, StaticOutboundSasAreWarnedAboutAsLabOnly) {
  GatewayConfig c = parse_config(kConfig, "t.yaml");
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_TRUE(has(c.warnings[0], "t.yaml:12:5: sas[0]: 1 static outbound SA in this file")) << c.warnings[0];
  EXPECT_TRUE(has(c.warnings[0], "nonces repeat")) << c.warnings[0];
  EXPECT_TRUE(has(c.warnings[0], "labs only")) << c.warnings[0];
  EXPECT_FALSE(has(c.warnings[0], "0a0b0c0d")) << c.warnings[0];
  // Inbound only: no such warning.
  std::string inbound_only = replace(
      kConfig,
      "  - { direction: out, spi: 0x1001, tunnel: t1, algo: aes128-gcm, key: "
      "\"0x000102030405060708090a0b0c0d0e0f10111213\" }\n",
      "");
  GatewayConfig in = parse_config(inbound_only);
  EXPECT_EQ(other_warnings(in).size(), in.warnings.size());
}

// The daemon installs a key || salt once per direction: a file that lists it
// twice is refused by --check, at the second entry's key.
TEST(ConfigSas, TheSameKeyTwiceInOneDirectionIsRefused) {
  std::string two_tunnels = replace(kConfig, "routes:\n",
                                    "  - { name: t2, port: wan, local: 198.51.100.10, remote: 203.0.113.2 }\nroutes:\n");
  std::string dup = two_tunnels +
                    "  - { direction: out, spi: 0x1002, tunnel: t2, algo: aes128-gcm, key: "
                    "\"0x000102030405060708090a0b0c0d0e0f10111213\" }\n";
  std::string e = error_of(dup);
  EXPECT_TRUE(has(e, "sas[2].key: the same key || salt as sas[0] (outbound)")) << e;
  EXPECT_FALSE(has(e, "0a0b0c0d")) << e;
  EXPECT_EQ(parse_config(kConfig).sas.size(), 2u);
}

class ConfigFileChecks : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("espgw-checks-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  std::string load_error(const std::string& path) {
    try {
      load_config_file(path);
    } catch (const ConfigError& e) {
      return e.what();
    }
    ADD_FAILURE() << "loaded " << path;
    return "";
  }
  std::filesystem::path dir_;
};

TEST_F(ConfigFileChecks, DevZeroIsRefusedNotRead) {
  EXPECT_TRUE(has(load_error("/dev/zero"), "/dev/zero: cannot read configuration: not a regular file"));
}

TEST_F(ConfigFileChecks, AFifoIsRefusedWithoutBlocking) {
  std::string p = (dir_ / "fifo").string();
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
  EXPECT_TRUE(has(load_error(p), "not a regular file"));
}

TEST_F(ConfigFileChecks, AFileAboveTheLimitIsRefused) {
  std::string big = std::string(kConfig) + "# " + std::string(kMaxConfigBytes, 'x') + "\n";
  EXPECT_TRUE(has(load_error(write("big.yaml", big)), "at most " + std::to_string(kMaxConfigBytes) + " are read"));
  std::string fits = std::string(kConfig) + "# " + std::string(kMaxConfigBytes - std::strlen(kConfig) - 3, 'x') + "\n";
  ASSERT_EQ(fits.size(), kMaxConfigBytes);
  EXPECT_EQ(load_config_file(write("fits.yaml", fits)).sas.size(), 2u);
}

// routes_file: one "PREFIX TUNNEL [PRIORITY]" per line, relative to the
// configuration's folder, checked like routes: (and against them).
TEST_F(ConfigFileChecks, RoutesFileIsReadAndChecked) {
  const std::string with_file = replace(kConfig, "sas:\n", "routes_file: table.txt\nsas:\n");
  write("table.txt", "# a comment\n10.1.0.0/16 t1\n\n192.0.2.0/24 t1 7  # trailing comment\n198.18.0.1 t1\n");
  GatewayConfig c = load_config_file(write("c.yaml", with_file));
  ASSERT_EQ(c.routes.size(), 4u);  // routes: first, then the file's
  EXPECT_EQ(c.routes[1].prefix.len, 16);
  EXPECT_EQ(c.routes[2].via.at(0).priority, 7u);
  EXPECT_EQ(c.routes[2].via.at(0).tunnel, "t1");
  EXPECT_EQ(c.routes[3].prefix.len, 32);

  write("table.txt", "10.1.0.0/16 t1\n10.1.0.0/16 t1\n");
  EXPECT_TRUE(has(load_error(write("c.yaml", with_file)), "table.txt:2: duplicate route for 10.1.0.0/16 (also line 1)"));
  write("table.txt", "172.31.0.0/16 t1\n");
  EXPECT_TRUE(has(load_error(write("c.yaml", with_file)), "table.txt:1: duplicate route for 172.31.0.0/16 (also in routes:)"));
  write("table.txt", "10.1.0.1/16 t1\n");
  EXPECT_TRUE(has(load_error(write("c.yaml", with_file)), "table.txt:1: prefix '10.1.0.1/16' has host bits set"));
  write("table.txt", "10.1.0.0/16 t9\n");
  EXPECT_TRUE(has(load_error(write("c.yaml", with_file)), "table.txt:1: no tunnel named 't9'"));
  write("table.txt", "10.1.0.0/33 t1\n");
  EXPECT_TRUE(has(load_error(write("c.yaml", with_file)), "table.txt:1: bad IPv4 prefix"));
  write("table.txt", "10.1.0.0/16 t1 70000\n");
  EXPECT_TRUE(has(load_error(write("c.yaml", with_file)), "priority '70000' is not in 0..65535"));
  write("table.txt", "10.1.0.0/16\n");
  EXPECT_TRUE(has(load_error(write("c.yaml", with_file)), "expected PREFIX TUNNEL [PRIORITY]"));
  EXPECT_TRUE(has(load_error(write("c.yaml", replace(kConfig, "sas:\n", "routes_file: missing.txt\nsas:\n"))),
                  "cannot read"));
}

// 10,000 tunnels, each with an outbound and an inbound SA and a route: within
// the data plane's tables.
TEST(ConfigLimits, TenThousandTunnelsFit) {
  std::string t, r, s;
  for (int i = 0; i < 10000; i++) {
    t += "  - { name: t" + std::to_string(i) + ", port: wan, local: 198.51.100.10, remote: 100.64." +
         std::to_string(i >> 8) + "." + std::to_string(i & 255) + " }\n";
    r += "  - { prefix: 10." + std::to_string(i >> 8) + "." + std::to_string(i & 255) + ".0/24, via: [{ tunnel: t" +
         std::to_string(i) + " }] }\n";
    char key[41];
    std::snprintf(key, sizeof key, "%032x%08x", 0x55, i);
    s += "  - { direction: out, spi: " + std::to_string(0x100000 + i) + ", tunnel: t" + std::to_string(i) +
         ", algo: aes128-gcm, key: \"" + key + "\" }\n";
    std::snprintf(key, sizeof key, "%032x%08x", 0x66, i);
    s += "  - { direction: in, spi: " + std::to_string(0x200000 + i) + ", tunnel: t" + std::to_string(i) +
         ", algo: aes128-gcm, key: \"" + key + "\" }\n";
  }
  std::string head = kConfig;
  head = head.substr(0, head.find("tunnels:\n"));
  GatewayConfig c = parse_config(head + "tunnels:\n" + t + "routes:\n" + r + "sas:\n" + s, "big.yaml");
  EXPECT_EQ(c.tunnels.size(), 10000u);
  EXPECT_EQ(c.sas.size(), 20000u);
  EXPECT_LE(c.tunnels.size(), dataplane::kMaxTunnels);
  EXPECT_LE(c.sas.size(), dataplane::kMaxSas);
}

// The real binary: exit status and output of `espgw --check`.
struct CheckRun {
  int status;
  std::string output;
};
CheckRun run_check(const std::string& path) {
  std::string cmd = std::string(ESPGW_BINARY) + " --check --config " + path + " 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  CheckRun r{-1, ""};
  if (!f) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) r.output.append(buf.data(), n);
  int st = ::pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST_F(ConfigFileChecks, CheckRefusesWhatTheDaemonWouldWithFileLineColumn) {
  std::string p = write("w16.yaml", replace(kConfig, kInboundEntry, kInboundEntry16));
  CheckRun r = run_check(p);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r.output, p + ":13:5: sas[1]: replay_window: 16 is neither 0 (off) nor in 32..4096")) << r.output;
  EXPECT_FALSE(has(r.output, "0a0b0c0d")) << r.output;
}

TEST_F(ConfigFileChecks, CheckPrintsWarningsAndSucceeds) {
  std::string p = write("in-only.yaml", replace(kConfig,
                                                "  - { direction: out, spi: 0x1001, tunnel: t1, algo: aes128-gcm, key: "
                                                "\"0x000102030405060708090a0b0c0d0e0f10111213\" }\n",
                                                ""));
  CheckRun r = run_check(p);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r.output, "warning: " + p + ":12:5: sas[0] (inbound SPI 0x00002001 on t1)")) << r.output;
  EXPECT_TRUE(has(r.output, ": OK (")) << r.output;
}

TEST_F(ConfigFileChecks, CheckWarnsAboutStaticOutboundSas) {
  std::string p = write("static-out.yaml", kConfig);
  CheckRun r = run_check(p);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r.output, "warning: " + p + ":12:5: sas[0]: 1 static outbound SA in this file")) << r.output;
  EXPECT_TRUE(has(r.output, ": OK (")) << r.output;
}

TEST_F(ConfigFileChecks, CheckRefusesDevZero) {
  CheckRun r = run_check("/dev/zero");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r.output, "not a regular file")) << r.output;
}

// docs/config.md explains every drop counter the data plane has.
TEST(ConfigDocs, EveryDropCounterIsExplained) {
  std::ifstream in(std::string(ESPGW_SOURCE_ROOT) + "/docs/config.md");
  std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(doc.empty());
  for (int r = 0; r < static_cast<int>(dataplane::DropReason::kCount); r++) {
    std::string row = std::string("| `") + dataplane::drop_reason_name(static_cast<dataplane::DropReason>(r)) + "` |";
    EXPECT_TRUE(has(doc, row)) << row;
  }
}

}  // namespace
}  // namespace espgw::control
