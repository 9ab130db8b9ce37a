#include "controller/doctor/storage_checks.hpp"

#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/run_program.hpp"

namespace volgate::controller::doctor {
namespace {

// "" when this user can read the file, else why not.
std::string read_problem(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  char byte;
  const ssize_t n = ::read(fd, &byte, 1);
  const int error = errno;
  ::close(fd);
  if (n < 0) return std::strerror(error);
  return "";
}

std::string mode_text(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

bool in_groups(gid_t gid) {
  if (::getegid() == gid) return true;
  std::vector<gid_t> groups(static_cast<size_t>(std::max(::getgroups(0, nullptr), 0)));
  const int n = ::getgroups(static_cast<int>(groups.size()), groups.data());
  for (int i = 0; i < n; ++i)
    if (groups[static_cast<size_t>(i)] == gid) return true;
  return false;
}

// The nearest directory at or above `path` that exists.
std::filesystem::path existing_ancestor(std::filesystem::path path) {
  std::error_code ec;
  while (!path.empty() && path != path.root_path() && !std::filesystem::exists(path, ec)) path = path.parent_path();
  return path.empty() ? std::filesystem::path("/") : path;
}

}  // namespace

std::vector<Finding> check_directories(const ControllerConfig& config, bool libvirt_used) {
  std::vector<Finding> findings;
  Finding state{.check = "state directory"};
  {
    std::error_code ec;
    const bool exists = std::filesystem::is_directory(config.state_dir, ec);
    const auto where = exists ? std::filesystem::path(config.state_dir) : existing_ancestor(config.state_dir);
    if (::access(where.c_str(), W_OK | X_OK) != 0) {
      const std::string why = std::strerror(errno);
      state.severity = Severity::failure;
      state.what = config.state_dir +
                   (exists ? " is not writable by this user" : " cannot be created: " + where.string() + " is not writable") +
                   " (" + why + ")";
      state.fix = "run the controller as the user that owns it, or give another --state-dir";
    } else {
      state.what = config.state_dir + (exists ? " is writable" : " can be created");
    }
  }
  findings.push_back(state);

  Finding sockets{.check = "gateway sockets"};
  const GatewayConfig& g = config.gateway;
  if (g.control_socket.empty()) {
    sockets.severity = Severity::skipped;
    sockets.what = "gateway.control_socket is none: no gateway serves attachments";
    findings.push_back(sockets);
    return findings;
  }
  const Severity problem = libvirt_used ? Severity::failure : Severity::warning;
  if (g.socket_group.empty()) {
    sockets.severity = problem;
    sockets.what = "the NBD socket " + g.nbd_socket +
                   " gets no group: libvirt-qemu does not exist, or this user is not in it";
    sockets.fix = "install libvirt-daemon-system (it makes the group QEMU runs in), run the controller as root or "
                  "in group libvirt-qemu, or name a group in gateway.socket_group";
    findings.push_back(sockets);
    return findings;
  }
  const struct group* gr = ::getgrnam(g.socket_group.c_str());
  if (!gr) {
    sockets.severity = problem;
    sockets.what = "gateway.socket_group " + g.socket_group + " does not exist";
    sockets.fix = "name an existing group (QEMU's: libvirt-qemu on Debian)";
    findings.push_back(sockets);
    return findings;
  }
  if (::geteuid() != 0 && !in_groups(gr->gr_gid)) {
    sockets.severity = problem;
    sockets.what = "this user may not give the NBD socket group " + g.socket_group + " (not a member)";
    sockets.fix = "add the controller's user to group " + g.socket_group + " (usermod -aG), or run it as root";
    findings.push_back(sockets);
    return findings;
  }
  // QEMU (in the group) must pass every directory above the socket. The controller makes the
  // state directory and its socket directory 0711 itself; the ones above are the host's.
  const auto state_dir = std::filesystem::path(config.state_dir).lexically_normal();
  for (auto dir = std::filesystem::path(g.nbd_socket).parent_path(); !dir.empty() && dir != dir.root_path();
       dir = dir.parent_path()) {
    const auto normal = dir.lexically_normal();
    const auto [a, b] = std::mismatch(state_dir.begin(), state_dir.end(), normal.begin(), normal.end());
    if (a == state_dir.end()) continue;  // the state directory or below it
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) continue;  // made by the controller (0711)
    const bool passable = (st.st_mode & S_IXOTH) || (st.st_gid == gr->gr_gid && (st.st_mode & S_IXGRP));
    if (!passable) {
      sockets.severity = problem;
      sockets.what = "QEMU (group " + g.socket_group + ") cannot reach " + g.nbd_socket + ": " + dir.string() +
                     " is mode " + mode_text(st.st_mode);
      sockets.fix = "chmod o+x " + dir.string() + ", or put the state directory where QEMU can reach it";
      findings.push_back(sockets);
      return findings;
    }
  }
  sockets.what = "the NBD socket " + g.nbd_socket + " will be group " + g.socket_group + ", reachable by QEMU";
  findings.push_back(sockets);
  return findings;
}

std::vector<Finding> check_ceph(const std::vector<PoolConfig>& pools) {
  std::vector<Finding> findings;
  for (const auto& pool : pools) {
    if (pool.driver != "rbd") continue;
    Finding f{.check = "ceph pool '" + pool.name + "'"};
    if (auto problem = read_problem(pool.ceph_conf); !problem.empty()) {
      f.severity = Severity::failure;
      f.what = "cannot read ceph_conf " + pool.ceph_conf + ": " + problem;
      f.fix = "install the cluster's ceph.conf there, readable by this user (chmod, or chgrp to the controller's group)";
    } else if (auto kproblem = pool.ceph_keyring.empty() ? "" : read_problem(pool.ceph_keyring); !kproblem.empty()) {
      f.severity = Severity::failure;
      f.what = "cannot read ceph_keyring " + pool.ceph_keyring + ": " + kproblem;
      f.fix = "put client." + pool.ceph_client + "'s keyring there (ceph auth get client." + pool.ceph_client +
              "), mode 0600, owned by the controller's user";
    } else {
      f.what = pool.ceph_conf + (pool.ceph_keyring.empty() ? "" : " and " + pool.ceph_keyring) + " are readable";
    }
    findings.push_back(f);
  }
  if (findings.empty()) findings.push_back({.check = "ceph", .severity = Severity::skipped, .what = "no rbd pool"});
  return findings;
}

std::string tcp_connect_problem(const std::string& portal, std::chrono::milliseconds timeout) {
  std::string host = portal, port = "3260";
  if (!portal.empty() && portal.front() == '[') {
    const size_t close = portal.find(']');
    if (close == std::string::npos) return "not HOST:PORT";
    host = portal.substr(1, close - 1);
    if (close + 1 < portal.size() && portal[close + 1] == ':') port = portal.substr(close + 2);
  } else if (const size_t colon = portal.rfind(':'); colon != std::string::npos) {
    host = portal.substr(0, colon);
    port = portal.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) return ::gai_strerror(rc);
  std::string problem = "no address";
  for (addrinfo* a = found; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      problem = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (rc == 0) {
        problem = "no answer within " + std::to_string(timeout.count()) + " ms";
        rc = -1;
      } else if (rc > 0) {
        int error = 0;
        socklen_t size = sizeof error;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
        rc = error == 0 ? 0 : -1;
        if (error) problem = std::strerror(error);
      } else {
        problem = std::strerror(errno);
      }
    } else if (rc != 0) {
      problem = std::strerror(errno);
    }
    ::close(fd);
    if (rc == 0) {
      ::freeaddrinfo(found);
      return "";
    }
  }
  ::freeaddrinfo(found);
  return problem;
}

std::vector<Finding> check_iscsi(const std::vector<PoolConfig>& pools, std::chrono::milliseconds timeout) {
  std::vector<Finding> findings;
  for (const auto& pool : pools) {
    if (pool.driver != "iscsi") continue;
    Finding tgt{.check = "iscsi pool '" + pool.name + "'"};
    std::vector<std::string> env;
    if (!pool.tgt_ipc_socket.empty()) env.push_back("TGT_IPC_SOCKET=" + pool.tgt_ipc_socket);
    const std::string socket = pool.tgt_ipc_socket.empty() ? "tgtd's default control socket" : pool.tgt_ipc_socket;
    try {
      auto r = run_program({"tgtadm", "--lld", "iscsi", "--mode", "system", "--op", "show"}, timeout, env);
      while (!r.output.empty() && r.output.back() == '\n') r.output.pop_back();
      if (r.exit_code != 0) {
        tgt.severity = Severity::failure;
        tgt.what = "tgtd does not answer tgtadm on " + socket + ": " +
                   (r.timed_out ? "no answer within " + std::to_string(timeout.count() / 1000) + " s"
                                : r.output.substr(0, r.output.find('\n')));
        tgt.fix = "start tgtd with the pool's portals (tgtd -f --iscsi portal=A:3260,portal=B:3260), or set "
                  "tgt_ipc_socket to the socket it uses";
      } else {
        tgt.what = "tgtd answers tgtadm on " + socket;
      }
    } catch (const std::exception& e) {
      tgt.severity = Severity::failure;
      tgt.what = std::string("cannot run tgtadm: ") + e.what();
      tgt.fix = "apt-get install tgt";
    }
    findings.push_back(tgt);
    for (const auto& portal : pool.portals) {
      Finding p{.check = "iscsi portal " + portal};
      if (auto problem = tcp_connect_problem(portal, timeout); !problem.empty()) {
        p.severity = Severity::failure;
        p.what = "pool '" + pool.name + "': cannot connect: " + problem;
        p.fix = "start tgtd listening on it (--iscsi portal=" + portal + "), or fix the pool's portals";
      } else {
        p.what = "pool '" + pool.name + "': takes connections";
      }
      findings.push_back(p);
    }
  }
  if (findings.empty()) findings.push_back({.check = "iscsi", .severity = Severity::skipped, .what = "no iscsi pool"});
  return findings;
}

}  // namespace volgate::controller::doctor
