#pragma once
// The hypervisor of this host as the controller reaches it: libvirt at a configured URI,
// connected on first use (the controller starts, and serves volumes, while libvirtd is down)
// and again after the connection broke.
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "controller/virt/virt_driver.hpp"

namespace volgate::controller {

class Hypervisor {
 public:
  using Connect = std::function<std::unique_ptr<VirtDriver>(const std::string& uri)>;

  // `uri` empty: no hypervisor (every call is 503). `connect` makes the driver (LibvirtDriver
  // by default; tests give a fake).
  explicit Hypervisor(std::string uri, Connect connect = {});

  // Runs `call` with the driver, connecting first if needed. A call that fails because the
  // connection broke drops it, so the next call connects anew. Throws ApiError 503 when libvirt
  // cannot be reached; VirtError from the call itself.
  template <class F>
  auto with_driver(F&& call) -> decltype(call(std::declval<VirtDriver&>())) {
    auto driver = connected();
    try {
      return call(*driver);
    } catch (const VirtError&) {
      drop_if_broken(driver);
      throw;
    }
  }

  const std::string& uri() const { return uri_; }

  // Domain events of every connection go to `handler` (on libvirt's event thread), preceded by
  // a DomainEvent::Kind::connected at each new connection, as events may have been missed while
  // there was none. An empty handler stops them; the handler is not called after this returns.
  void watch(DomainEventHandler handler);

 private:
  std::shared_ptr<VirtDriver> connected();
  void drop_if_broken(const std::shared_ptr<VirtDriver>& driver);
  void dispatch(const DomainEvent& event);

  const std::string uri_;
  Connect connect_;
  std::mutex mutex_;
  std::mutex handler_mutex_;  // held while the handler runs, so that watch({}) waits for it
  DomainEventHandler handler_;
  // Last: destroyed first, so its events stop before what dispatches them goes.
  std::shared_ptr<VirtDriver> driver_;
};

}  // namespace volgate::controller
