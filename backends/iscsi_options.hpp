#pragma once
// What names an iSCSI volume and how its paths are used: the parsed form of
// iscsi://PORTAL[,PORTAL...]/TARGET-IQN/LUN[,OPTION=VALUE...].
#include <chrono>
#include <string>
#include <vector>

namespace volgate::backends {

enum class PathPolicy {
  failover,     // everything on the first healthy portal in the order given; back to it when it heals
  round_robin,  // requests spread over every healthy portal in turn
};

struct IscsiOptions {
  std::vector<std::string> portals;  // HOST:PORT, as libiscsi takes them ([::1]:3260 for IPv6)
  std::string target;                // the target's IQN
  int lun = 0;
  std::string initiator_name = "iqn.2026-01.org.volgate:initiator";
  // CHAP: the secrets live in files, never on a command line.
  std::string chap_user;                // empty: no CHAP
  std::string chap_secret_file;
  std::string mutual_chap_user;         // empty: the target is not asked to authenticate itself
  std::string mutual_chap_secret_file;
  PathPolicy path_policy = PathPolicy::failover;
  std::chrono::seconds no_path_timeout{30};
  std::chrono::seconds path_check_interval{5};
  bool read_only = false;
  // Fence lost sessions with SCSI persistent reservations (see iscsi_path.hpp). Off for a LUN
  // whose reservations something else manages; a lost path's socket is then only reset.
  bool reservations = true;
  // Opened by the successor in a live hand-over (volgate serve --take-over), not from a spec:
  // keys of earlier runs of this host may be the predecessor's live sessions, which serve
  // until the hand-over commits. They are preempted then (handover_committed), not at once.
  bool take_over = false;

  // The defaults give failover under a second for a closed connection and within io_timeout
  // plus a little for a silently dead one.
  std::chrono::milliseconds io_timeout{3000};     // a request unanswered this long fails its path
  std::chrono::milliseconds login_timeout{5000};  // connect + login + checks, per attempt
};

// "iscsi iqn.2026-01.x:vol/1 via 127.0.0.1:3260,127.0.0.2:3260" for logs and NBD descriptions.
std::string describe(const IscsiOptions& options);

}  // namespace volgate::backends
