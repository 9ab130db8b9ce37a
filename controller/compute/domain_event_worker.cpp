#include "controller/compute/domain_event_worker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string_view>

namespace volgate::controller {

DomainEventWorker::DomainEventWorker(ComputeService& compute, Hypervisor& hypervisor, DomainEventOptions options)
    : compute_(compute), hypervisor_(hypervisor), options_(options) {}

void DomainEventWorker::start() {
  hypervisor_.watch([this](const DomainEvent& e) { post(e); });
  // A connection made before the watch (recovery) had its connected event go nowhere.
  post({.kind = DomainEvent::Kind::connected});
  thread_ = std::thread([this] { loop(); });
}

void DomainEventWorker::stop() {
  hypervisor_.watch({});
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DomainEventWorker::post(const DomainEvent& event) {
  std::unique_lock lock(mutex_);
  if (event.kind == DomainEvent::Kind::io_error) {
    // Throttled here, on the event thread, so that a storm of errors does not fill the queue.
    auto& t = io_errors_[{event.uuid, event.alias}];
    const auto now = std::chrono::steady_clock::now();
    if (t.last != std::chrono::steady_clock::time_point() && now - t.last < options_.io_error_interval) {
      ++t.suppressed;
      return;
    }
    t.last = now;
    DomainEvent e = event;
    if (e.reason.empty()) e.reason = "EIO";
    if (t.suppressed) e.reason += " (and " + std::to_string(t.suppressed) + " more since the last report)";
    t.suppressed = 0;
    push_locked(e);
  } else {
    push_locked(event);
  }
  lock.unlock();
  wake_.notify_one();
}

void DomainEventWorker::push_locked(const DomainEvent& event, std::chrono::milliseconds delay) {
  // A flood of events (a guest going up and down, disks failing) must not grow the queue without
  // bound: past the limit they are dropped and one look at every server, which covers whatever
  // they said, is queued instead.
  if (queue_.size() >= kMaxQueuedEvents) {
    if (!full_reconcile_queued_) {
      spdlog::warn("more than {} libvirt events waiting: the rest are dropped, every server is looked at instead",
                   kMaxQueuedEvents);
      queue_.push_back({DomainEvent{.kind = DomainEvent::Kind::connected}, std::chrono::steady_clock::now()});
      full_reconcile_queued_ = true;
    }
    return;
  }
  queue_.push_back({event, std::chrono::steady_clock::now() + delay});
}

bool DomainEventWorker::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return idle_.wait_for(lock, timeout, [&] { return queue_.empty() && !busy_; });
}

void DomainEventWorker::loop() {
  std::unique_lock lock(mutex_);
  auto next_connect = std::chrono::steady_clock::now();
  while (!stopping_) {
    const auto now = std::chrono::steady_clock::now();
    auto due = queue_.end();
    auto wake_at = next_connect;
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->due <= now) {
        due = it;
        break;
      }
      wake_at = std::min(wake_at, it->due);
    }
    if (due != queue_.end()) {
      DomainEvent event = std::move(due->event);
      queue_.erase(due);
      if (event.kind == DomainEvent::Kind::connected) full_reconcile_queued_ = false;
      busy_ = true;
      lock.unlock();
      handle(event);
      lock.lock();
      busy_ = false;
      continue;
    }
    if (queue_.empty()) idle_.notify_all();
    if (now >= next_connect) {
      busy_ = true;
      lock.unlock();
      // Connects when there is no connection (its connected event then reconciles), and
      // drops a broken one so that the next pass connects anew.
      try {
        hypervisor_.with_driver([](VirtDriver& d) { return d.list_servers(); });
      } catch (const std::exception&) {
        // libvirt is down: said by whoever needs it; tried again at the next pass.
      }
      lock.lock();
      busy_ = false;
      next_connect = std::chrono::steady_clock::now() + options_.connect_interval;
      continue;
    }
    const size_t queued = queue_.size();
    wake_.wait_until(lock, wake_at, [&] { return stopping_ || queue_.size() != queued; });
  }
}

void DomainEventWorker::handle(const DomainEvent& event) {
  try {
    switch (event.kind) {
      case DomainEvent::Kind::connected:
        compute_.reconcile_servers();
        break;
      case DomainEvent::Kind::changed:
        compute_.reconcile_server(event.uuid);
        break;
      case DomainEvent::Kind::device_removed:
        if (compute_.reconcile_server(event.uuid) == 0 && std::string_view(event.alias).starts_with("ua-")) {
          // One of volgate's disks left the live domain but is still mapped: perhaps libvirt
          // has not yet saved the definition without it. Look again once.
          DomainEvent again = event;
          again.kind = DomainEvent::Kind::changed;
          std::lock_guard lock(mutex_);
          push_locked(again, options_.removal_recheck);
        }
        break;
      case DomainEvent::Kind::io_error: {
        // Disks volgate attached carry the alias ua-VOLUME.
        const std::string_view alias = event.alias;
        if (alias.starts_with("ua-"))
          spdlog::error("server {}: I/O error on volume {}: {}", event.uuid, alias.substr(3), event.reason);
        else
          spdlog::error("server {}: I/O error on disk {}: {}", event.uuid, alias, event.reason);
        break;
      }
    }
  } catch (const std::exception& e) {
    spdlog::warn("server {}: domain event not reconciled: {}", event.uuid, e.what());
  }
}

}  // namespace volgate::controller
