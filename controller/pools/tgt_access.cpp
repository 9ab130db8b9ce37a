#include "controller/pools/tgt_access.hpp"

#include <algorithm>
#include <cstdlib>
#include <sstream>

namespace volgate::controller {
namespace {

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

size_t indent_of(const std::string& line) {
  size_t at = line.find_first_not_of(' ');
  return at == std::string::npos ? line.size() : at;
}

// tgtd lists initiator names and addresses together; a name is never a valid address.
bool is_initiator_name(const std::string& entry) {
  return entry.starts_with("iqn.") || entry.starts_with("eui.") || entry.starts_with("naa.");
}

std::vector<std::string> bind_target(int tid, const char* option, const std::string& value, bool bind) {
  return {"--op", bind ? "bind" : "unbind", "--mode", "target", "--tid", std::to_string(tid), option, value};
}

std::vector<std::string> bind_account(int tid, const std::string& user, bool bind) {
  return {"--op", bind ? "bind" : "unbind", "--mode", "account", "--tid", std::to_string(tid), "--user", user};
}

}  // namespace

// A target block: "Target N: NAME" at the margin, its sections ("LUN information:", "Account
// information:", "ACL information:", ...) indented once, their entries twice or more.
std::map<std::string, TgtTarget> parse_tgt_targets(const std::string& show) {
  std::map<std::string, TgtTarget> targets;
  std::istringstream in(show);
  std::string line;
  TgtTarget* current = nullptr;
  std::string section;
  while (std::getline(in, line)) {
    size_t indent = indent_of(line);
    std::string text = line.substr(indent);
    if (indent == 0 && text.starts_with("Target ")) {
      size_t colon = text.find(": ");
      if (colon == std::string::npos) continue;
      current = &targets[text.substr(colon + 2)];
      current->tid = std::atoi(text.c_str() + 7);
      section.clear();
    } else if (!current || text.empty()) {
      continue;
    } else if (indent == 4) {
      section = text;
    } else if (section == "LUN information:") {
      if (text == "LUN: 1") current->has_lun1 = true;
    } else if (section == "Account information:" && indent == 8) {
      if (!text.ends_with(" (outgoing)")) current->incoming_users.push_back(text);
    } else if (section == "ACL information:" && indent == 8) {
      current->acl.push_back(text);
    }
  }
  return targets;
}

std::vector<std::string> parse_tgt_accounts(const std::string& show) {
  std::vector<std::string> accounts;
  std::istringstream in(show);
  std::string line;
  while (std::getline(in, line)) {
    size_t indent = indent_of(line);
    if (indent > 0 && indent < line.size()) accounts.push_back(line.substr(indent));
  }
  return accounts;
}

TargetAccess target_access(const PoolConfig& config) {
  TargetAccess access;
  if (!config.initiator_addresses.empty()) {
    for (const auto& address : config.initiator_addresses)  // tgtd refuses to bind one twice
      if (!contains(access.addresses, address)) access.addresses.push_back(address);
  } else {
    access.names = {config.initiator_name};
  }
  access.chap_user = config.chap_user;
  return access;
}

std::vector<std::vector<std::string>> access_commands(int tid, const TgtTarget& has, const TargetAccess& want) {
  std::vector<std::vector<std::string>> commands;
  if (!want.chap_user.empty() && !contains(has.incoming_users, want.chap_user))
    commands.push_back(bind_account(tid, want.chap_user, true));
  for (const auto& entry : has.acl) {
    if (is_initiator_name(entry)) {
      if (!contains(want.names, entry)) commands.push_back(bind_target(tid, "--initiator-name", entry, false));
    } else if (!contains(want.addresses, entry)) {
      commands.push_back(bind_target(tid, "--initiator-address", entry, false));
    }
  }
  for (const auto& address : want.addresses)
    if (!contains(has.acl, address)) commands.push_back(bind_target(tid, "--initiator-address", address, true));
  for (const auto& name : want.names)
    if (!contains(has.acl, name)) commands.push_back(bind_target(tid, "--initiator-name", name, true));
  for (const auto& user : has.incoming_users)
    if (user != want.chap_user) commands.push_back(bind_account(tid, user, false));
  return commands;
}

}  // namespace volgate::controller
