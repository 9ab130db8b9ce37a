#pragma once
// Who may log in to an iscsi pool's targets, as tgtd sees it: what `tgtadm --op show` reports
// about each target (its LUNs, CHAP accounts and access list), and the tgtadm commands that
// bring a target to what the pool's config asks for. Pure text in, text out: IscsiPool runs
// the commands.
#include <map>
#include <string>
#include <vector>

#include "controller/pools/pool.hpp"

namespace volgate::controller {

struct TgtTarget {
  int tid = 0;
  bool has_lun1 = false;
  std::vector<std::string> incoming_users;  // CHAP accounts an initiator may log in as
  std::vector<std::string> acl;             // addresses (or ALL) and initiator names admitted
};

// `tgtadm --op show --mode target`, by target name.
std::map<std::string, TgtTarget> parse_tgt_targets(const std::string& show);
// `tgtadm --op show --mode account`: every account tgtd has.
std::vector<std::string> parse_tgt_accounts(const std::string& show);

struct TargetAccess {
  std::vector<std::string> addresses;  // --initiator-address entries
  std::vector<std::string> names;      // --initiator-name entries
  std::string chap_user;               // the one incoming account; empty: no CHAP
};

// What a pool's targets admit (see PoolConfig: addresses when given, else the initiator name).
TargetAccess target_access(const PoolConfig& config);

// The tgtadm arguments (after --lld iscsi) that give target `tid`, which has `has`, exactly
// `want`. Ordered so that the target never admits anyone it admitted neither before nor after:
// the CHAP account is bound before any other is unbound, and access-list entries are removed
// before new ones are added. Binding a CHAP account needs the account to exist in tgtd.
std::vector<std::vector<std::string>> access_commands(int tid, const TgtTarget& has, const TargetAccess& want);

}  // namespace volgate::controller
