#pragma once
// What `volgate doctor` checks of the controller's configuration on this host: the state and
// socket directories (and the group QEMU reaches the gateway's NBD socket through), each RBD
// pool's Ceph config and keyring, and each iSCSI pool's tgtd and portals.
#include <chrono>
#include <string>
#include <vector>

#include "controller/controller_config.hpp"
#include "controller/doctor/finding.hpp"

namespace volgate::controller::doctor {

// The state directory (this user can create and write it) and the gateway's socket directory:
// the NBD socket's group exists and can be given, and QEMU, running in that group, can reach
// the socket through every directory above it. `libvirt_used`: without a hypervisor a missing
// group is only a warning.
std::vector<Finding> check_directories(const ControllerConfig& config, bool libvirt_used);

// Each rbd pool's ceph_conf, and its ceph_keyring when one is given: readable by this user.
std::vector<Finding> check_ceph(const std::vector<PoolConfig>& pools);

// Each iscsi pool: tgtd answers tgtadm (on the pool's tgt_ipc_socket), and each portal takes a
// TCP connection within `timeout`.
std::vector<Finding> check_iscsi(const std::vector<PoolConfig>& pools, std::chrono::milliseconds timeout);

// Connects to HOST:PORT (or [v6]:PORT); "" when it took the connection, else why not.
std::string tcp_connect_problem(const std::string& portal, std::chrono::milliseconds timeout);

}  // namespace volgate::controller::doctor
