#include "nbd/export_flush.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <mutex>
#include <optional>
#include <vector>

#include "backends/device_front.hpp"
#include "common/current_context.hpp"

namespace volgate::nbd {

FlushOutcome flush_exports(const std::vector<std::shared_ptr<const Export>>& exports,
                           std::chrono::milliseconds timeout) {
  // Shared with the completions, which may come after we gave up on them.
  struct State {
    boost::asio::io_context io;
    std::vector<std::optional<std::error_code>> results;
    size_t pending = 0;
  };
  auto state = std::make_shared<State>();
  state->results.resize(exports.size());
  {
    CurrentContextGuard current(state->io);
    for (size_t i = 0; i < exports.size(); ++i) {
      ++state->pending;
      // Through a front: a read-only device, or one that cannot flush, has nothing to flush.
      backends::DeviceFront(*exports[i]->device).flush([state, i](std::error_code ec) {
        state->results[i] = ec;
        --state->pending;
      });
    }
  }
  // Completions may come from a device's own thread: wait for them, not for an idle context.
  auto guard = boost::asio::make_work_guard(state->io);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (state->pending > 0 && std::chrono::steady_clock::now() < deadline)
    state->io.run_for(std::chrono::milliseconds(5));
  // A device thread that posted its answer holds a unit of the io_context's work until its
  // post() has returned (NbdDevice::finish, PostBack): the io_context must live until the work
  // is gone, which it is once run() finds none. Destroyed earlier, that unit's release touched
  // freed memory (AddressSanitizer caught it at a stop).
  guard.reset();
  while (!state->io.stopped() && std::chrono::steady_clock::now() < deadline)
    state->io.run_for(std::chrono::milliseconds(5));
  if (!state->io.stopped()) {
    // A device still holds work here, for a flush it has not answered: the io_context must
    // outlive this call. The state stays reachable, never destroyed (there is one per stop or
    // removal that timed out).
    static std::mutex mutex;
    static auto* lingering = new std::vector<std::shared_ptr<State>>;
    std::lock_guard lock(mutex);
    lingering->push_back(state);
  }

  FlushOutcome outcome;
  for (size_t i = 0; i < exports.size(); ++i) {
    if (!state->results[i]) outcome.unanswered.push_back(exports[i]->name);
    else if (*state->results[i]) outcome.failed.emplace_back(exports[i]->name, *state->results[i]);
  }
  return outcome;
}

}  // namespace volgate::nbd
