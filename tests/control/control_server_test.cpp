// ControlServer against real Unix sockets (no DPDK): what many clients
// together may cost the daemon. Subscribers that never read are shed, the
// largest backlog first, once their replies and events together pass the
// total bound; a client past the connection limit waits in the backlog.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "control/control_server.h"

namespace espgw::control {
namespace {

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("espgw-srv-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "s").string();
  }
  void TearDown() override {
    for (int fd : fds_) ::close(fd);
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<ControlServer> start(ControlServer::Limits limits) {
    // "sub" subscribes; every line gets {"ok":true}.
    return std::make_unique<ControlServer>(
        path_, "", [](WipingString& line) { return ControlReply{{{"ok", true}}, line == "sub"}; }, limits);
  }
  int connect_client() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << std::strerror(errno);
    fds_.push_back(fd);
    return fd;
  }
  static void send_line(int fd, const std::string& l) {
    std::string s = l + "\n";
    ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  // What the client has received so far (non-blocking), and whether the server closed it.
  static std::string drain(int fd, bool* closed = nullptr) {
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t r = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (r > 0) {
        out.append(buf, static_cast<size_t>(r));
        continue;
      }
      if (closed) *closed = r == 0;
      return out;
    }
  }
  void poll_all(ControlServer& s, int rounds = 20) {
    for (int i = 0; i < rounds; i++) s.poll(1);
  }

  std::filesystem::path dir_;
  std::string path_;
  std::vector<int> fds_;
};

TEST_F(ControlServerTest, SubscribersThatNeverReadAreBoundedAltogether) {
  ControlServer::Limits lim;
  lim.max_pending_out = 1 << 20;    // each could hold 1 MiB ...
  lim.max_pending_total = 4 << 20;  // ... but all of them together 4 MiB
  auto srv = start(lim);
  std::vector<int> hogs;
  for (int i = 0; i < 16; i++) {
    int fd = connect_client();
    int small = 4096;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    hogs.push_back(fd);
  }
  int reader = connect_client();
  poll_all(*srv);
  for (int fd : hogs) send_line(fd, "sub");
  send_line(reader, "sub");
  poll_all(*srv);
  ASSERT_EQ(srv->clients(), 17u);
  drain(reader);
  const nlohmann::json event = {{"event", "tunnel-state"}, {"pad", std::string(4000, 'e')}};
  size_t peak = 0, reader_lines = 0;
  for (int i = 0; i < 2000; i++) {
    srv->broadcast_event(event);
    peak = std::max(peak, srv->pending_out());
    if (i % 8 == 0) {
      srv->poll(0);
      std::string got = drain(reader);
      reader_lines += static_cast<size_t>(std::count(got.begin(), got.end(), '\n'));
    }
  }
  poll_all(*srv);
  std::string got = drain(reader);
  reader_lines += static_cast<size_t>(std::count(got.begin(), got.end(), '\n'));
  // 16 x 1 MiB would be waiting without the total bound.
  EXPECT_LE(peak, lim.max_pending_total);
  EXPECT_LE(srv->pending_out(), lim.max_pending_total);
  EXPECT_EQ(reader_lines, 2000u) << "the client that reads lost events";
  size_t hogs_closed = 0;
  for (int fd : hogs) {
    bool closed = false;
    drain(fd, &closed);
    hogs_closed += closed;
  }
  EXPECT_EQ(hogs_closed, 16u);
  EXPECT_EQ(srv->clients(), 1u);
}

// Past the limit a client waits in the listen backlog (a rekey storm of
// hooks is served in turn), and the poll loop does not spin on the listen
// socket meanwhile.
TEST_F(ControlServerTest, ClientsPastTheLimitWaitTheirTurn) {
  ControlServer::Limits lim;
  lim.max_clients = 4;
  auto srv = start(lim);
  std::vector<int> in;
  for (int i = 0; i < 4; i++) in.push_back(connect_client());
  poll_all(*srv);
  int extra = connect_client();  // into the backlog
  send_line(extra, "ping");
  poll_all(*srv);
  EXPECT_EQ(srv->clients(), 4u);
  bool closed = false;
  EXPECT_EQ(drain(extra, &closed), "");
  EXPECT_FALSE(closed);
  // poll() waits its timeout instead of returning at once for the pending connection.
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; i++) srv->poll(20);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(90));
  for (int fd : in) send_line(fd, "ping");
  poll_all(*srv);
  for (int fd : in) EXPECT_EQ(drain(fd), "{\"ok\":true}\n");
  // One leaves: the waiting one gets in and is answered.
  ::close(in[0]);
  fds_.erase(std::find(fds_.begin(), fds_.end(), in[0]));
  poll_all(*srv);
  EXPECT_EQ(drain(extra), "{\"ok\":true}\n");
  EXPECT_EQ(srv->clients(), 4u);
}

// A request's handler emits events (tunnel-state, sa-installed ...) that go
// to every subscriber, the requesting client included. When that event
// overflows the requester's queue it is disconnected inside its own request:
// the server must not touch the client afterwards (it did: a use after free
// a subscriber could trigger by pipelining requests and never reading).
TEST_F(ControlServerTest, AClientDroppedByAnEventItsOwnRequestRaisedIsNotUsedAfterwards) {
  ControlServer::Limits lim;
  lim.max_pending_out = 64 * 1024;
  ControlServer* self = nullptr;
  ControlServer srv(
      path_, "",
      [&self](WipingString& line) {
        if (line == "emit") self->broadcast_event({{"event", "tunnel-state"}, {"pad", std::string(3000, 'e')}});
        return ControlReply{{{"ok", true}, {"pad", std::string(3000, 'r')}}, line == "sub"};
      },
      lim);
  self = &srv;
  int hog = connect_client();
  int small = 4096;
  ::setsockopt(hog, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  int other = connect_client();
  poll_all(srv);
  send_line(hog, "sub");
  send_line(other, "sub");
  poll_all(srv);
  drain(other);
  std::string burst;
  for (int i = 0; i < 200; i++) burst += "emit\n";  // 200 x 6 KB: far past 64 KiB, read in one go
  ASSERT_EQ(::send(hog, burst.data(), burst.size(), MSG_NOSIGNAL), static_cast<ssize_t>(burst.size()));
  size_t other_events = 0;
  for (int i = 0; i < 50; i++) {
    srv.poll(2);
    std::string got = drain(other);
    other_events += static_cast<size_t>(std::count(got.begin(), got.end(), '\n'));
  }
  bool closed = false;
  drain(hog, &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(srv.clients(), 1u);
  EXPECT_GT(other_events, 0u);
  // The server still serves.
  send_line(other, "ping");
  poll_all(srv);
  std::string got = drain(other);
  EXPECT_NE(got.find("\"ok\":true"), std::string::npos) << got;
}

// One reply larger than the per-client bound, to a client with nothing
// waiting, is delivered whole (list-sas with 65536 SPI reservations is ~5 MB);
// the bound applies to what piles up unread behind it.
TEST_F(ControlServerTest, OneReplyLargerThanTheBoundIsDeliveredWhole) {
  ControlServer::Limits lim;
  lim.max_pending_out = 64 * 1024;
  ControlServer srv(
      path_, "", [](WipingString&) { return ControlReply{{{"ok", true}, {"pad", std::string(200 * 1024, 'r')}}, false}; },
      lim);
  int fd = connect_client();
  poll_all(srv);
  send_line(fd, "list");
  std::string got;
  bool closed = false;
  for (int i = 0; i < 200 && got.find('\n') == std::string::npos && !closed; i++) {
    srv.poll(2);
    got += drain(fd, &closed);
  }
  ASSERT_NE(got.find('\n'), std::string::npos) << "no complete reply (closed: " << closed << ")";
  EXPECT_EQ(got.size(), 200 * 1024 + std::string(R"({"ok":true,"pad":""})").size() + 1);
  EXPECT_EQ(srv.clients(), 1u);
}

// A stale socket from a daemon that died is replaced; anything else at the
// path (a config typo naming a real file) is refused and left alone.
TEST_F(ControlServerTest, OnlyAStaleSocketIsReplaced) {
  { std::ofstream(path_) << "precious"; }
  try {
    start(ControlServer::Limits{});
    FAIL() << "a regular file was replaced by the socket";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exists and is not a socket"), std::string::npos) << e.what();
  }
  std::ifstream in(path_);
  std::string text;
  in >> text;
  EXPECT_EQ(text, "precious");
  std::filesystem::remove(path_);
  // A socket nobody listens on any more: replaced.
  int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ::close(stale);
  auto srv = start(ControlServer::Limits{});
  int c = connect_client();
  send_line(c, "ping");
  poll_all(*srv);
  EXPECT_EQ(drain(c), "{\"ok\":true}\n");
}

}  // namespace
}  // namespace espgw::control
