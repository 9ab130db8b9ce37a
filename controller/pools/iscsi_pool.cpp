#include "controller/pools/iscsi_pool.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>

#include "common/run_program.hpp"
#include "crypto/chap_secret.hpp"

namespace volgate::controller {
namespace {

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// `bytes` random bytes as lowercase hex, NUL-terminated, in memory kept out of swap and dumps.
crypto::SecureBytes random_hex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) throw std::runtime_error("no random bytes");
  static constexpr char kHex[] = "0123456789abcdef";
  crypto::SecureBytes text(2 * bytes + 1);
  char* out = reinterpret_cast<char*>(text.data());
  for (size_t i = 0; i < bytes; ++i) {
    out[2 * i] = kHex[raw[i] >> 4];
    out[2 * i + 1] = kHex[raw[i] & 0xf];
  }
  out[2 * bytes] = '\0';
  OPENSSL_cleanse(raw.data(), raw.size());
  return text;
}

}  // namespace

IscsiPool::IscsiPool(PoolConfig config) : config_(std::move(config)), files_(config_) {
  if (config_.portals.empty()) throw std::runtime_error("pool '" + config_.name + "': an iscsi pool needs portals");
  if (config_.initiator_name.empty())  // finish_config fills it in; without it no one could log in
    throw std::runtime_error("pool '" + config_.name + "': an iscsi pool needs initiator_name");
  show_targets();  // fails now, naming the reason, if tgtd is not there
  secure_existing_targets();
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
  spec.iscsi.initiator_name = config_.initiator_name;
  spec.iscsi.chap_user = config_.chap_user;
  spec.iscsi.chap_secret_file = config_.chap_secret_file;
  return spec;
}

// tgtadm takes an account's password on its command line and nowhere else (no file, no standard
// input). While it runs (milliseconds), the password is in its argv: readable in
// /proc/PID/cmdline, and so by `ps`, by every local user unless /proc is mounted with hidepid=2;
// tgtd itself also logs it if its debug logging is on. The alternative, speaking tgtd's private
// IPC protocol, would tie us to the layout of one tgt version's request struct. The exposure is
// limited instead: the password is given only when an account is (re)made, once per controller
// start and after a tgtd restart, and never appears in our logs or error messages.
std::string IscsiPool::tgtadm(const std::vector<std::string>& args, const crypto::SecureBytes* password) const {
  std::vector<const char*> argv{"tgtadm", "--lld", "iscsi"};
  for (const auto& a : args) argv.push_back(a.c_str());
  if (password) {
    argv.push_back("--password");
    argv.push_back(password->chars());  // from its wiped memory, never copied into a string
  }
  // tgtadm talks to the local tgtd: seconds at most, unless tgtd hangs, which must not hang a
  // flow with it. Its listings grow with the targets: the output bound is far above any pool's.
  constexpr auto kTimeout = std::chrono::seconds(30);
  constexpr size_t kMaxOutput = size_t{64} << 20;
  const std::string socket_variable =
      config_.tgt_ipc_socket.empty() ? "TGT_IPC_SOCKET" : "TGT_IPC_SOCKET=" + config_.tgt_ipc_socket;
  ProgramResult result = run_program(std::span<const char* const>(argv), kTimeout, {socket_variable}, kMaxOutput);
  std::string& output = result.output;
  if (result.exit_code != 0 || result.output_truncated) {
    while (!output.empty() && output.back() == '\n') output.pop_back();
    std::string command;
    for (const auto& a : args) command += " " + a;
    if (password) command += " --password (secret)";
    const std::string why = result.timed_out          ? "no answer within 30 s (is tgtd hung?)"
                            : result.output_truncated ? "more than 64 MiB of output"
                            : output.empty()          ? "failed"
                                                      : output;
    throw std::runtime_error("pool '" + config_.name + "': tgtadm" + command + ": " + why);
  }
  return output;
}

void IscsiPool::expose(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  const std::string name = target_name(volume_id);
  auto targets = parse_tgt_targets(show_targets());
  auto it = targets.find(name);
  TgtTarget target;
  if (it != targets.end()) {
    target = it->second;
  } else {
    std::set<int> used;
    for (const auto& [n, t] : targets) used.insert(t.tid);
    target.tid = 1;
    while (used.count(target.tid)) ++target.tid;
    // A new target's access list is empty, and tgtd admits no one to such a target.
    tgtadm({"--op", "new", "--mode", "target", "--tid", std::to_string(target.tid), "-T", name});
  }
  std::vector<std::string> accounts;
  apply_access(target.tid, target, accounts);
  if (!target.has_lun1)
    tgtadm({"--op", "new", "--mode", "logicalunit", "--tid", std::to_string(target.tid), "--lun", "1", "-b",
            files_.volume_path(volume_id)});
}

void IscsiPool::apply_access(int tid, const TgtTarget& has, std::vector<std::string>& accounts) {
  const TargetAccess want = target_access(config_);
  if (!want.chap_user.empty() && !contains(has.incoming_users, want.chap_user)) {
    // A restarted tgtd has forgotten its accounts (and targets: expose makes them again).
    if (accounts.empty()) accounts = parse_tgt_accounts(tgtadm({"--op", "show", "--mode", "account"}));
    if (!contains(accounts, want.chap_user)) {
      new_account(want.chap_user, crypto::read_chap_secret(config_.chap_secret_file));
      accounts.push_back(want.chap_user);
    }
  }
  for (const auto& command : access_commands(tid, has, want)) tgtadm(command);
}

void IscsiPool::new_account(const std::string& user, const crypto::SecureBytes& secret) {
  tgtadm({"--op", "new", "--mode", "account", "--user", user}, &secret);
}

// tgtd keeps one account per CHAP user with the secret it was made with, and never shows the
// secret: a secret changed in the file since can only take effect by remaking the account.
// Deleting an account unbinds it from every target, and a target with no account asks for no
// secret at all; so the targets that require the account first require a throwaway one too
// (random name and secret that nobody has). Until the account is back and bound again, they
// refuse every login instead of admitting anyone. Targets of other software on the same tgtd
// that use the account get it back the same way. Should the controller die in between, the
// throwaway account stays bound and those targets stay closed until the next start fixes ours.
void IscsiPool::install_chap_account(const std::map<std::string, TgtTarget>& targets) {
  crypto::SecureBytes secret = crypto::read_chap_secret(config_.chap_secret_file);
  const std::string& user = config_.chap_user;
  if (!contains(parse_tgt_accounts(tgtadm({"--op", "show", "--mode", "account"})), user)) {
    new_account(user, secret);
    return;
  }
  std::vector<std::string> holders;  // tids
  for (const auto& [name, target] : targets)
    if (contains(target.incoming_users, user)) holders.push_back(std::to_string(target.tid));
  std::string lock_user;
  if (!holders.empty()) {
    lock_user = "volgate-lock-" + std::string(random_hex(8).chars());
    new_account(lock_user, random_hex(32));
    for (const auto& tid : holders) tgtadm({"--op", "bind", "--mode", "account", "--tid", tid, "--user", lock_user});
  }
  tgtadm({"--op", "delete", "--mode", "account", "--user", user});
  new_account(user, secret);
  for (const auto& tid : holders) tgtadm({"--op", "bind", "--mode", "account", "--tid", tid, "--user", user});
  if (!lock_user.empty()) tgtadm({"--op", "delete", "--mode", "account", "--user", lock_user});
}

void IscsiPool::secure_existing_targets() {
  std::lock_guard lock(mutex_);
  if (!config_.chap_user.empty()) install_chap_account(parse_tgt_targets(show_targets()));
  const std::string ours = config_.iqn_prefix + ":volume-";
  std::vector<std::string> accounts;
  size_t count = 0;
  for (const auto& [name, target] : parse_tgt_targets(show_targets())) {
    // Another pool may share the prefix and tgtd: a target is ours if its volume is in our directory.
    if (!name.starts_with(ours) || !files_.volume_exists(name.substr(ours.size()))) continue;
    apply_access(target.tid, target, accounts);
    ++count;
  }
  const TargetAccess access = target_access(config_);
  spdlog::info("pool '{}': {} existing target(s) admit {}{}", config_.name, count,
               access.addresses.empty() ? "initiator " + config_.initiator_name
                                        : std::to_string(access.addresses.size()) + " initiator address(es)",
               access.chap_user.empty() ? ", without CHAP" : " with CHAP user " + access.chap_user);
}

void IscsiPool::unexpose(const std::string& volume_id) {
  std::lock_guard lock(mutex_);
  auto targets = parse_tgt_targets(show_targets());
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
