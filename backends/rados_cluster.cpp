#include "backends/rados_cluster.hpp"

#include <unistd.h>

#include <boost/asio/detail/config.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

// Ceph's libraries share Asio's call-stack keys with every Asio user in the process (see
// BOOST_ASIO_DISABLE_THREAD_KEYWORD_EXTENSION in the top CMakeLists.txt): ours must be theirs.
#if defined(BOOST_ASIO_HAS_THREAD_KEYWORD_EXTENSION)
#error "build with BOOST_ASIO_DISABLE_THREAD_KEYWORD_EXTENSION, as Ceph's libraries are"
#endif

namespace volgate::backends {
namespace {

bool readable_file(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

std::string rados_setting(rados_t cluster, const char* name) {
  char value[1024] = {};
  if (rados_conf_get(cluster, name, value, sizeof(value) - 1) < 0) return {};
  return value;
}

// Connections by (conf, id, keyring); an entry dies with the last export using it.
struct Registry {
  std::mutex mutex;
  std::map<std::string, std::weak_ptr<RadosCluster>> clusters;
};
Registry& registry() {
  static Registry r;
  return r;
}

std::string key_of(const RadosClientOptions& o) {
  return o.ceph_conf.value_or("") + '\0' + o.ceph_id + '\0' + o.keyring.value_or("");
}

rados_t connect_new(const RadosClientOptions& options) {
  if (options.ceph_conf && !readable_file(*options.ceph_conf))
    throw std::runtime_error("ceph-conf '" + *options.ceph_conf + "': " + std::strerror(errno));
  if (options.keyring && !readable_file(*options.keyring))
    throw std::runtime_error("keyring '" + *options.keyring + "': " + std::strerror(errno));

  const std::string client = "client." + options.ceph_id;
  rados_t cluster = nullptr;
  if (int r = rados_create2(&cluster, "ceph", client.c_str(), 0); r < 0)
    throw std::runtime_error("cannot create a Ceph client " + client + ": " + std::strerror(-r));
  std::unique_ptr<std::remove_pointer_t<rados_t>, void (*)(rados_t)> owned(cluster, rados_shutdown);

  int r = rados_conf_read_file(cluster, options.ceph_conf ? options.ceph_conf->c_str() : nullptr);
  if (r < 0 && options.ceph_conf)
    throw std::runtime_error("ceph-conf '" + *options.ceph_conf + "' cannot be parsed: " + std::strerror(-r));
  // librados' own diagnostics would go to our stderr, where a user expects one line per error.
  rados_conf_set(cluster, "log_to_stderr", "false");
  rados_conf_set(cluster, "err_to_stderr", "false");
  if (options.keyring) rados_conf_set(cluster, "keyring", options.keyring->c_str());
  // librados waits five minutes for the monitors by default; a gateway starting against an
  // unreachable cluster should say so promptly. Requests once connected keep librados'
  // default of no OSD timeout: they wait for the cluster to come back.
  rados_conf_set(cluster, "client_mount_timeout",
                 std::to_string(RadosCluster::kConnectTimeoutSeconds).c_str());
  // Monitor commands (pool statistics for the controller's capacity reports, pool lookups)
  // give up instead of blocking their caller for as long as the monitors are away; data
  // requests go to the OSDs and are not affected.
  rados_conf_set(cluster, "rados_mon_op_timeout",
                 std::to_string(RadosCluster::kMonitorCommandTimeoutSeconds).c_str());

  const std::string monitors = rados_setting(cluster, "mon_host");
  if (monitors.empty())
    throw std::runtime_error(options.ceph_conf
                                 ? "ceph-conf '" + *options.ceph_conf + "' names no monitors (mon_host)"
                                 : "no Ceph configuration names the monitors; give ceph-conf=PATH");
  if (r = rados_connect(cluster); r < 0) {
    if (r == -EACCES || r == -EPERM || r == -ENOTSUP)
      throw std::runtime_error("the monitors at " + monitors + " refused " + client + " (" +
                               std::strerror(-r) + "): check its keyring" +
                               (options.keyring ? " '" + *options.keyring + "'" : ""));
    throw std::runtime_error("cannot reach the Ceph monitors at " + monitors + " as " + client +
                             ": " + std::strerror(-r));
  }
  return owned.release();
}

}  // namespace

std::shared_ptr<RadosCluster> RadosCluster::connect(const RadosClientOptions& options) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto& slot = r.clusters[key_of(options)];
  if (auto live = slot.lock()) return live;
  std::shared_ptr<RadosCluster> cluster(new RadosCluster(connect_new(options)));
  slot = cluster;
  return cluster;
}

RadosCluster::~RadosCluster() { rados_shutdown(cluster_); }

}  // namespace volgate::backends
