#include "controller/pools/iscsi_pool.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace volgate::controller {
namespace {

struct TargetInfo {
  int tid = 0;
  bool has_lun1 = false;
};

// Parses `tgtadm --op show --mode target`: "Target N: NAME" opens a block, "LUN: 1" inside it.
std::map<std::string, TargetInfo> parse_targets(const std::string& show) {
  std::map<std::string, TargetInfo> targets;
  std::istringstream in(show);
  std::string line;
  TargetInfo* current = nullptr;
  while (std::getline(in, line)) {
    if (line.starts_with("Target ")) {
      size_t colon = line.find(": ");
      if (colon == std::string::npos) continue;
      TargetInfo& t = targets[line.substr(colon + 2)];
      t.tid = std::atoi(line.c_str() + 7);
      current = &t;
    } else if (current) {
      size_t at = line.find_first_not_of(' ');
      if (at != std::string::npos && line.compare(at, std::string::npos, "LUN: 1") == 0) current->has_lun1 = true;
    }
  }
  return targets;
}

}  // namespace

IscsiPool::IscsiPool(PoolConfig config) : config_(std::move(config)), files_(config_) {
  if (config_.portals.empty()) throw std::runtime_error("pool '" + config_.name + "': an iscsi pool needs portals");
  tgtadm({"--op", "show", "--mode", "target"});  // fails now, naming the reason, if tgtd is not there
}

std::map<std::string, std::string> IscsiPool::capabilities() const {
  auto caps = files_.capabilities();
  caps["driver"] = "iscsi";
  caps["storage_protocol"] = "iSCSI";
  caps["multipath"] = config_.portals.size() > 1 ? "true" : "false";
  std::string portals;
  for (const auto& p : config_.portals) portals += (portals.empty() ? "" : ",") + p;
  caps["portals"] = portals;
  return caps;
}

std::string IscsiPool::target_name(const std::string& volume_id) const {
  return config_.iqn_prefix + ":volume-" + volume_id;
}

gateway::ExportSpec IscsiPool::export_spec(const std::string& volume_id) const {
  gateway::ExportSpec spec{.backend = gateway::ExportSpec::Backend::iscsi};
  spec.iscsi.portals = config_.portals;
  spec.iscsi.target = target_name(volume_id);
  spec.iscsi.lun = 1;
  return spec;
}

std::string IscsiPool::tgtadm(const std::vector<std::string>& args) const {
  std::vector<std::string> argv_text{"tgtadm", "--lld", "iscsi"};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "TGT_IPC_SOCKET=", 15) != 0) env_text.emplace_back(*e);
  if (!config_.tgt_ipc_socket.empty()) env_text.push_back("TGT_IPC_SOCKET=" + config_.tgt_ipc_socket);
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, "tgtadm", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    throw std::system_error(rc, std::generic_category(), "run tgtadm");
  }
  std::string output;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(out[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buffer, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!output.empty() && output.back() == '\n') output.pop_back();
    std::string command;
    for (const auto& a : args) command += " " + a;
    throw std::runtime_error("pool '" + config_.name + "': tgtadm" + command + ": " +
                             (output.empty() ? "failed" : output));
  }
  return output;
}

void IscsiPool::expose(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  const std::string name = target_name(volume_id);
  auto targets = parse_targets(tgtadm({"--op", "show", "--mode", "target"}));
  auto it = targets.find(name);
  int tid;
  if (it != targets.end()) {
    tid = it->second.tid;
  } else {
    std::set<int> used;
    for (const auto& [n, t] : targets) used.insert(t.tid);
    tid = 1;
    while (used.count(tid)) ++tid;
    tgtadm({"--op", "new", "--mode", "target", "--tid", std::to_string(tid), "-T", name});
    if (config_.initiator_addresses.empty()) {
      tgtadm({"--op", "bind", "--mode", "target", "--tid", std::to_string(tid), "-I", "ALL"});
    } else {
      for (const auto& address : config_.initiator_addresses)
        tgtadm({"--op", "bind", "--mode", "target", "--tid", std::to_string(tid), "-I", address});
    }
  }
  if (it == targets.end() || !it->second.has_lun1)
    tgtadm({"--op", "new", "--mode", "logicalunit", "--tid", std::to_string(tid), "--lun", "1", "-b",
            files_.volume_path(volume_id)});
}

void IscsiPool::unexpose(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  auto targets = parse_targets(tgtadm({"--op", "show", "--mode", "target"}));
  auto it = targets.find(target_name(volume_id));
  if (it == targets.end()) return;
  tgtadm({"--op", "delete", "--force", "--mode", "target", "--tid", std::to_string(it->second.tid)});
}

void IscsiPool::create_volume(const std::string& volume_id, uint64_t bytes) {
  files_.create_volume(volume_id, bytes);
  expose(volume_id);
}

void IscsiPool::clone_volume(const std::string& volume_id, const std::string& source_volume_id, uint64_t bytes,
                             const CopyProgress& progress) {
  files_.clone_volume(volume_id, source_volume_id, bytes, progress);
  expose(volume_id);
}

void IscsiPool::create_volume_from_snapshot(const std::string& volume_id, const std::string& snapshot_id,
                                            uint64_t bytes, const CopyProgress& progress) {
  files_.create_volume_from_snapshot(volume_id, snapshot_id, bytes, progress);
  expose(volume_id);
}

void IscsiPool::create_volume_from_file(const std::string& volume_id, int image_fd, uint64_t bytes,
                                        const CopyProgress& progress) {
  files_.create_volume_from_file(volume_id, image_fd, bytes, progress);
  expose(volume_id);
}

void IscsiPool::resize_volume(const std::string& volume_id, uint64_t bytes) {
  // tgtd reads a LUN's size when the LUN is added: re-add it. Only volumes nobody uses are
  // resized here (the volume is `extending`, or an extend is being reverted).
  files_.resize_volume(volume_id, bytes);
  unexpose(volume_id);
  expose(volume_id);
}

void IscsiPool::delete_volume(const std::string& volume_id) {
  unexpose(volume_id);
  files_.delete_volume(volume_id);
}

}  // namespace volgate::controller
