#pragma once
// libvirt's domain events, reconciled off libvirt's event thread: a domain that went away
// (undefined, or a transient one stopped) or a disk removed outside the controller has its
// volumes released (ComputeService::reconcile_server, under the server's lock); a new
// connection to libvirt, and the start, look at every server, since events were missed before.
// QEMU's I/O errors are logged with the server and the volume, at most once per
// `io_error_interval` for each disk (a failing disk reports every request).
//
// It also keeps the connection to libvirt: without one there are no events, so it connects
// (and notices a broken connection) every `connect_interval` even when no request comes.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "controller/compute/compute_service.hpp"

namespace volgate::controller {

struct DomainEventOptions {
  std::chrono::milliseconds connect_interval{std::chrono::seconds(5)};
  std::chrono::milliseconds io_error_interval{std::chrono::seconds(10)};
  // A disk detached live and from the definition in one call (virsh detach-disk --persistent)
  // is announced before libvirt has saved the definition without it: the server is looked at
  // again this much later.
  std::chrono::milliseconds removal_recheck{std::chrono::seconds(1)};
};

class DomainEventWorker {
 public:
  DomainEventWorker(ComputeService& compute, Hypervisor& hypervisor, DomainEventOptions options = {});
  ~DomainEventWorker() { stop(); }
  DomainEventWorker(const DomainEventWorker&) = delete;
  DomainEventWorker& operator=(const DomainEventWorker&) = delete;

  // Watches the hypervisor's events and reconciles every server once.
  void start();
  // No event is handled after this returns.
  void stop();
  // Hands an event on (called on libvirt's event thread: only queues it).
  void post(const DomainEvent& event);
  // Waits until the queue is empty and nothing is being handled (tests). False after `timeout`.
  bool wait_idle(std::chrono::milliseconds timeout);

 private:
  void loop();
  void handle(const DomainEvent& event);
  void push_locked(const DomainEvent& event, std::chrono::milliseconds delay = {});

  ComputeService& compute_;
  Hypervisor& hypervisor_;
  const DomainEventOptions options_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  struct Queued {
    DomainEvent event;
    std::chrono::steady_clock::time_point due;
  };
  static constexpr size_t kMaxQueuedEvents = 1024;
  std::deque<Queued> queue_;  // in order of arrival; a delayed one waits until it is due
  bool full_reconcile_queued_ = false;  // the queue overflowed: a look at every server waits in it
  bool busy_ = false;
  bool stopping_ = false;
  struct Throttle {
    std::chrono::steady_clock::time_point last;
    unsigned suppressed = 0;
  };
  std::map<std::pair<std::string, std::string>, Throttle> io_errors_;  // (server, alias)
  std::thread thread_;
};

}  // namespace volgate::controller
