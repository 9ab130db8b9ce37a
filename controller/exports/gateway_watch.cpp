#include "controller/exports/gateway_watch.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace volgate::controller {

GatewayWatch::GatewayWatch(GatewayExports& gateway, Actions actions, std::chrono::milliseconds check_interval,
                           std::chrono::milliseconds repair_interval)
    : gateway_(gateway),
      actions_(std::move(actions)),
      check_interval_(check_interval),
      repair_interval_(repair_interval) {}

void GatewayWatch::start() { thread_ = std::thread([this] { run(); }); }

void GatewayWatch::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void GatewayWatch::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    const auto wait = check();
    lock.lock();
    wake_.wait_for(lock, wait, [this] { return stopping_; });
  }
}

std::chrono::milliseconds GatewayWatch::check() {
  int64_t instance = -1;
  const auto now = std::chrono::steady_clock::now();
  try {
    instance = gateway_.instance();
  } catch (const std::exception& e) {
    if (!reported_unreachable_) {
      spdlog::warn("the gateway does not answer: {}", e.what());
      down_since_ = now;
    }
    reported_unreachable_ = true;
    instance_ = -1;
    if (actions_.unreachable) {
      try {
        actions_.unreachable();
      } catch (const std::exception& e) {
        spdlog::error("could not start the gateway: {}", e.what());
      }
    }
    // Whoever restarts it (this controller, systemd), its exports are put back as soon as it
    // answers: a connect to a unix socket nobody listens on costs microseconds.
    return now - down_since_ < kDownRecheckFor ? std::min(kDownRecheck, check_interval_) : check_interval_;
  }
  reported_unreachable_ = false;
  if (instance == instance_ && now - last_repair_ < repair_interval_) return check_interval_;
  if (instance != instance_) spdlog::info("gateway pid {}: checking that it serves every attached volume", instance);
  try {
    actions_.reconcile();
    instance_ = instance;  // only once done: a pass that failed is tried again at once
    last_repair_ = now;
  } catch (const std::exception& e) {
    spdlog::error("export check failed: {}", e.what());
  }
  return check_interval_;
}

}  // namespace volgate::controller
