#include "control/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <new>
#include <vector>

#include <openssl/crypto.h>

namespace espgw::control {
namespace {
std::runtime_error sys_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}
}  // namespace

ControlServer::ControlServer(std::string path, const std::string& group_name, Handler handler)
    : ControlServer(std::move(path), group_name, std::move(handler), Limits{}) {}

ControlServer::ControlServer(std::string path, const std::string& group_name, Handler handler, Limits limits)
    : path_(std::move(path)), handler_(std::move(handler)), limits_(limits) {
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY)
    limits_.max_clients = std::min<size_t>(limits_.max_clients, std::max<size_t>(nofile.rlim_cur / 2, 1));
  sockaddr_un addr{};
  if (path_.empty() || path_.size() >= sizeof(addr.sun_path))
    throw std::runtime_error("control socket path '" + path_ + "' is empty or longer than " +
                             std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  std::error_code ec;
  auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);

  // A live daemon already owns the path: refuse rather than steal it.
  int probe = socket(AF_UNIX, SOCK_STREAM, 0);
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
  if (probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    close(probe);
    throw std::runtime_error("control socket " + path_ + " is in use by another espgw");
  }
  if (probe >= 0) close(probe);
  // Only a stale socket is replaced: a path that names a file, a directory
  // or anything else (a typo in the config, /etc/...) is never unlinked.
  struct stat st{};
  if (lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw std::runtime_error("control socket path " + path_ + " exists and is not a socket; not replacing it");
    unlink(path_.c_str());
  }

  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw sys_error("control socket");
  mode_t old = umask(0117);  // 0660 from the start: no window with wider access
  int rc = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old);
  if (rc < 0) {
    close(listen_fd_);
    throw sys_error("bind " + path_);
  }
  if (!group_name.empty()) {
    struct group* g = getgrnam(group_name.c_str());
    if (!g || chown(path_.c_str(), static_cast<uid_t>(-1), g->gr_gid) < 0) {
      close(listen_fd_);
      unlink(path_.c_str());
      throw std::runtime_error("control socket group '" + group_name + "': " +
                               (g ? std::strerror(errno) : "no such group"));
    }
  }
  chmod(path_.c_str(), 0660);
  if (listen(listen_fd_, kListenBacklog) < 0) throw sys_error("listen " + path_);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw sys_error("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
}

ControlServer::~ControlServer() {
  for (auto& [fd, c] : clients_) close(fd);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    unlink(path_.c_str());
  }
}

void ControlServer::poll(int timeout_ms) {
  epoll_event evs[32];
  int n = epoll_wait(epoll_fd_, evs, 32, timeout_ms);
  for (int i = 0; i < n; i++) {
    int fd = evs[i].data.fd;
    if (fd == listen_fd_) {
      accept_clients();
      continue;
    }
    // Whatever goes wrong with one client (out of memory while buffering
    // its lines) ends that client's connection, never the daemon.
    try {
      if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
        // Serve what it sent before hanging up, then close (after more
        // polls when it sent more than one read's worth).
        if (!(evs[i].events & EPOLLIN) || !read_client(fd)) close_client(fd);
        continue;
      }
      if (evs[i].events & EPOLLIN) read_client(fd);
      if (clients_.count(fd) && (evs[i].events & EPOLLOUT)) write_client(fd);
    } catch (...) {
      close_client(fd);
    }
  }
}

void ControlServer::accept_clients() {
  for (;;) {
    if (clients_.size() >= limits_.max_clients) {
      set_accepting(false);  // the rest wait in the listen backlog
      return;
    }
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    try {
      clients_[fd] = Client{};
    } catch (...) {  // no memory for one more client: refuse it, keep serving
      close(fd);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
}

// Level-triggered: while the listen socket is watched and has connections
// waiting, every poll returns at once, so it is unwatched while the client
// table is full and watched again when a client leaves.
void ControlServer::set_accepting(bool on) {
  if (accepting_ == on) return;
  epoll_event ev{};
  ev.events = on ? uint32_t(EPOLLIN) : 0u;
  ev.data.fd = listen_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
  accepting_ = on;
}

namespace {
// The request boundary: whatever the handler throws (a type error, a bad
// allocation, anything) becomes an error reply and the next line is served.
ControlReply serve_line(const ControlServer::Handler& handler, WipingString& line) noexcept {
  const char* what = "internal error";
  std::string message;
  try {
    return handler(line);
  } catch (const std::bad_alloc&) {
    what = "out of memory while serving the request";
  } catch (const std::exception& e) {
    try {
      message = e.what();
    } catch (...) {
    }
  } catch (...) {
  }
  try {
    return {{{"ok", false}, {"error", message.empty() ? std::string(what) : message}}, false};
  } catch (...) {
    return {};  // still one line (queue() answers for a reply it cannot encode)
  }
}
}  // namespace

// Reads at most kMaxReadPerCall bytes (epoll is level-triggered: the rest
// comes on the next poll), serving each complete line as soon as it is in,
// so a client that writes without pause neither holds the control thread
// nor grows its buffer past one line.
bool ControlServer::read_client(int fd) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return false;
  Client& c = it->second;
  char buf[16384];
  bool eof = false;
  size_t budget = kMaxReadPerCall;
  while (budget > 0) {
    ssize_t r = read(fd, buf, std::min(sizeof(buf), budget));
    if (r == 0) {
      // Peer closed its side: answer complete lines already read, then go.
      eof = true;
      break;
    }
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      OPENSSL_cleanse(buf, sizeof(buf));
      close_client(fd);
      return false;
    }
    budget -= static_cast<size_t>(r);
    c.in.append(buf, static_cast<size_t>(r));
    if (!serve_lines(fd, c)) {
      OPENSSL_cleanse(buf, sizeof(buf));
      return false;  // closed (c went with it)
    }
  }
  OPENSSL_cleanse(buf, sizeof(buf));  // request bytes may hold keys
  write_client(fd);
  if (eof) close_client(fd);  // a half-finished line from a client that left is dropped
  return !eof && budget == 0 && clients_.count(fd);
}

// Serves the complete lines in c.in and keeps the unfinished tail. A line
// (without its newline) longer than kMaxRequest, complete or not, gets an
// error and ends the connection. False when the client was closed.
bool ControlServer::serve_lines(int fd, Client& c) {
  size_t start = 0, pos;
  auto too_long = [&] {
    OPENSSL_cleanse(c.in.data(), c.in.size());
    c.in.clear();
    queue(fd, c, {{"ok", false}, {"error", "request longer than " + std::to_string(kMaxRequest) + " bytes"}});
    if (!clients_.count(fd)) return false;
    write_client(fd);
    close_client(fd);
    return false;
  };
  while ((pos = c.in.find('\n', start)) != std::string::npos) {
    if (pos - start > kMaxRequest) return too_long();
    WipingString line = c.in.substr(start, pos - start);
    start = pos + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    serving_fd_ = fd;
    ControlReply reply = serve_line(handler_, line);
    serving_fd_ = -1;
    OPENSSL_cleanse(line.data(), line.size());  // short lines live inside the object (SSO)
    if (c.closing) {  // the handler's events dropped this client: c is still valid, now erase it
      close_client(fd);
      return false;
    }
    if (reply.subscribe) c.subscribed = true;
    queue(fd, c, reply.body);
    if (!clients_.count(fd)) return false;  // (c.in went with the client; see close_client)
  }
  if (c.in.size() - start > kMaxRequest) return too_long();
  // Keep the unfinished tail; the served lines' bytes are wiped, not just freed.
  if (start > 0) {
    WipingString rest = c.in.substr(start);
    OPENSSL_cleanse(c.in.data(), c.in.size());
    c.in = std::move(rest);
  }
  return true;
}

void ControlServer::queue(int fd, Client& c, const nlohmann::json& msg) {
  if (c.closing) return;
  const size_t before = c.out.size();
  try {
    c.out += msg.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (...) {  // out of memory: the client still gets one line for its request
    c.out += R"({"ok":false,"error":"reply could not be encoded"})";
  }
  c.out += '\n';
  pending_out_ += c.out.size() - before;
  // A client that never reads. One reply to a client with nothing waiting
  // is always queued whole, whatever its size (a list-sas with 65536 SPI
  // reservations is ~5 MB): the bound is on what piles up unread.
  if (before > 0 && c.out.size() > limits_.max_pending_out) {
    close_client(fd);
    return;
  }
  update_interest(fd, c);
  if (pending_out_ > limits_.max_pending_total) shed_largest_backlog();
}

// Many clients that never read: the one with the most waiting goes (c may
// be the one just queued to).
void ControlServer::shed_largest_backlog() {
  while (pending_out_ > limits_.max_pending_total) {
    auto largest = clients_.end();
    for (auto it = clients_.begin(); it != clients_.end(); ++it)
      if (!it->second.closing && (largest == clients_.end() || it->second.out.size() > largest->second.out.size()))
        largest = it;
    if (largest == clients_.end() || largest->second.out.empty()) return;
    close_client(largest->first);
  }
}

void ControlServer::write_client(int fd) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = it->second;
  if (c.closing) return;
  while (!c.out.empty()) {
    ssize_t w = send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      close_client(fd);
      return;
    }
    c.out.erase(0, static_cast<size_t>(w));
    pending_out_ -= static_cast<size_t>(w);
  }
  update_interest(fd, c);
}

void ControlServer::update_interest(int fd, const Client& c) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (c.out.empty() ? 0u : uint32_t(EPOLLOUT));
  ev.data.fd = fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void ControlServer::close_client(int fd) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  if (fd == serving_fd_) {
    // Inside this client's own request (serve_lines holds a reference to
    // it): mark it; serve_lines erases it when the handler returns.
    if (!it->second.closing) {
      it->second.closing = true;
      pending_out_ -= it->second.out.size();
      std::string().swap(it->second.out);
    }
    return;
  }
  OPENSSL_cleanse(it->second.in.data(), it->second.in.size());
  pending_out_ -= it->second.out.size();
  clients_.erase(it);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  if (clients_.size() < limits_.max_clients) set_accepting(true);
}

void ControlServer::broadcast_event(const nlohmann::json& event) {
  std::vector<int> fds;
  for (auto& [fd, c] : clients_)
    if (c.subscribed && !c.closing) fds.push_back(fd);
  for (int fd : fds) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) continue;
    queue(fd, it->second, event);
    write_client(fd);
  }
}

}  // namespace espgw::control
