#pragma once
// One librados client connection, shared by every RBD export that names the same cluster, client
// id and keyring. Each connection has its own messenger threads and a socket to every OSD, so a
// gateway serving many volumes of one cluster must not open one per volume.
#include <rados/librados.h>

#include <memory>
#include <optional>
#include <string>

namespace volgate::backends {

struct RadosClientOptions {
  std::optional<std::string> ceph_conf;  // default: librados' search (/etc/ceph/ceph.conf, ...)
  std::string ceph_id = "admin";         // the client name is client.<ceph_id>
  std::optional<std::string> keyring;    // default: what the configuration names
};

class RadosCluster {
 public:
  // How long connecting may take before an unreachable cluster is reported.
  static constexpr int kConnectTimeoutSeconds = 5;
  // How long a monitor command may wait for the monitors once connected.
  static constexpr int kMonitorCommandTimeoutSeconds = 30;

  // The live connection for these options, or a new one. Throws std::runtime_error with one
  // line naming the monitors, the client or the file at fault.
  static std::shared_ptr<RadosCluster> connect(const RadosClientOptions& options);
  ~RadosCluster();
  RadosCluster(const RadosCluster&) = delete;
  RadosCluster& operator=(const RadosCluster&) = delete;

  rados_t handle() const { return cluster_; }

 private:
  explicit RadosCluster(rados_t cluster) : cluster_(cluster) {}
  rados_t cluster_;
};

}  // namespace volgate::backends
