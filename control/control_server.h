// The control socket: a Unix stream socket speaking JSON lines, one request
// one reply (docs/control-api.md). Non-blocking and polled by the control
// thread; a slow or dead client never blocks it: each client has bounded
// input and output buffers and is dropped when it overflows them.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>

#include "control/wiping_string.h"

namespace espgw::control {

// What the request handler (the JSON codec) answers for one line.
struct ControlReply {
  nlohmann::json body;
  bool subscribe = false;  // the connection asked for events
};

class ControlServer {
 public:
  // Gets one request line (without its newline) and may wipe it: a line can
  // hold key material. Whatever it throws becomes an error reply.
  using Handler = std::function<ControlReply(WipingString& line)>;

  static constexpr size_t kMaxRequest = 64 * 1024;     // bytes per line
  static constexpr size_t kMaxPendingOut = 4 << 20;    // per client, unread (one reply may be larger)
  // Bytes read from one client per poll: one that never stops writing
  // cannot hold the control thread.
  static constexpr size_t kMaxReadPerCall = 256 * 1024;
  // listen() backlog: hooks of an IKE daemon may connect by the hundreds at
  // once (a rekey storm); the kernel caps it at net.core.somaxconn.
  static constexpr int kListenBacklog = 4096;

  // What many clients together may hold. Past max_clients new connections
  // wait in the listen backlog until a client leaves (the daemon keeps file
  // descriptors for itself: at most half of RLIMIT_NOFILE is used). Past max_pending_total
  // bytes of replies and events waiting in all clients together, the client
  // with the most waiting is disconnected: subscribers that never read
  // cannot grow the daemon by max_pending_out per connection.
  struct Limits {
    size_t max_clients = 1024;
    size_t max_pending_out = kMaxPendingOut;
    size_t max_pending_total = 64 << 20;
  };

  // Creates the socket (mode 0660, group `group` when not empty); throws
  // std::runtime_error with the reason when it cannot.
  ControlServer(std::string path, const std::string& group, Handler handler);
  ControlServer(std::string path, const std::string& group, Handler handler, Limits limits);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Waits up to timeout_ms for activity and serves what is ready.
  void poll(int timeout_ms);

  // Sends one JSON line to every subscribed client (events).
  void broadcast_event(const nlohmann::json& event);

  const std::string& path() const { return path_; }
  size_t clients() const { return clients_.size(); }
  // Bytes of replies and events waiting to be sent, all clients together.
  size_t pending_out() const { return pending_out_; }
  const Limits& limits() const { return limits_; }

 private:
  struct Client {
    WipingString in;  // may hold keys: cleansed whenever it grows or shrinks
    std::string out;
    bool subscribed = false;
    // Closed while its own request was being served (an event that request
    // raised overflowed its queue): erased once the handler has returned.
    bool closing = false;
  };
  void accept_clients();
  // True when it stopped at kMaxReadPerCall with the client still open.
  bool read_client(int fd);
  bool serve_lines(int fd, Client& c);
  void write_client(int fd);
  void close_client(int fd);
  void queue(int fd, Client& c, const nlohmann::json& msg);
  void update_interest(int fd, const Client& c);
  void set_accepting(bool on);
  void shed_largest_backlog();

  std::string path_;
  Handler handler_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  std::map<int, Client> clients_;
  Limits limits_;
  size_t pending_out_ = 0;
  bool accepting_ = true;
  int serving_fd_ = -1;  // the client whose request the handler is running
};

}  // namespace espgw::control
