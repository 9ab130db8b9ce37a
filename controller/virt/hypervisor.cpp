#include "controller/virt/hypervisor.hpp"

#include <spdlog/spdlog.h>

#include "controller/api/api_error.hpp"
#include "controller/virt/libvirt_driver.hpp"

namespace volgate::controller {

Hypervisor::Hypervisor(std::string uri, Connect connect) : uri_(std::move(uri)), connect_(std::move(connect)) {
  if (!connect_) connect_ = [](const std::string& u) { return std::make_unique<LibvirtDriver>(u); };
}

std::shared_ptr<VirtDriver> Hypervisor::connected() {
  if (uri_.empty())
    throw ApiError(ApiError::Kind::service_unavailable,
                   "This controller has no hypervisor (libvirt_uri is \"none\" in its config).");
  std::lock_guard lock(mutex_);
  if (!driver_) {
    try {
      driver_ = connect_(uri_);
      spdlog::info("connected to libvirt at {}", uri_);
      driver_->watch_events([this](const DomainEvent& e) { dispatch(e); });
      dispatch({.kind = DomainEvent::Kind::connected});
    } catch (const std::exception& e) {
      throw ApiError(ApiError::Kind::service_unavailable, std::string("Cannot reach the hypervisor: ") + e.what());
    }
  }
  return driver_;
}

void Hypervisor::watch(DomainEventHandler handler) {
  std::lock_guard lock(handler_mutex_);
  handler_ = std::move(handler);
}

void Hypervisor::dispatch(const DomainEvent& event) {
  std::lock_guard lock(handler_mutex_);
  if (handler_) handler_(event);
}

void Hypervisor::drop_if_broken(const std::shared_ptr<VirtDriver>& driver) {
  // A refusal of one request leaves the connection as it is; only a dead one is dropped. The
  // driver cannot tell the two apart cheaply, so ask it something harmless.
  try {
    driver->list_servers();
  } catch (const std::exception& e) {
    spdlog::warn("libvirt at {}: the connection broke ({}); reconnecting at the next request", uri_, e.what());
    std::lock_guard lock(mutex_);
    if (driver_ == driver) driver_.reset();
  }
}

}  // namespace volgate::controller
