#include "gateway/handover_source.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "common/untrusted_json.hpp"
#include "gateway/handover_channel.hpp"
#include "gateway/service_manager.hpp"
#include "nbd/export_flush.hpp"

namespace volgate::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using control::Json;

ControlResponse refusal(int status, const std::string& message) {
  WipingString text = control::to_text(control::error_to_json(status, message));
  return {status, std::string(text.data(), text.size())};
}

pid_t peer_pid(int fd) {
  ucred cred{};
  socklen_t length = sizeof cred;
  return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) == 0 ? cred.pid : -1;
}

// The program a process runs, for the log: the asker receives every volume key.
std::string program_of(pid_t pid) {
  std::error_code ec;
  auto path = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
  return ec ? "an unknown program" : path.string();
}

}  // namespace

std::optional<ControlResponse> HandoverSource::refuse(const WipingString& body) const {
  if (!parts_.unsupported.empty()) return refusal(409, parts_.unsupported);
  if (parts_.server.stopping()) return refusal(409, "the gateway is stopping");
  std::vector<int> versions;
  try {
    versions = handover::offered_versions(
        parse_untrusted_json_as<Json>(std::string_view(body.data(), body.size())));
  } catch (const std::exception& e) {
    return refusal(400, e.what());
  }
  if (std::find(versions.begin(), versions.end(), handover::kVersion) == versions.end()) {
    std::string offered;
    for (int v : versions) offered += (offered.empty() ? "" : ", ") + std::to_string(v);
    return refusal(409, "this gateway hands over with state version " + std::to_string(handover::kVersion) +
                            "; the successor offered " + (offered.empty() ? "none" : offered));
  }
  if (auto name = parts_.service.first_export_on(ExportSpec::Backend::memory))
    return refusal(409, "export '" + *name + "' is a memory device: its data lives in this process and "
                        "cannot be handed over");
  return std::nullopt;
}

handover::State HandoverSource::state() const {
  handover::State state;
  state.pid = ::getpid();
  state.settings = parts_.settings;
  state.nbd_listeners = parts_.server.listening_descriptors().size();
  state.metrics = parts_.metrics_fd >= 0;
  state.exports = parts_.service.definitions();
  return state;
}

bool HandoverSource::run(UniqueFd connection) {
  const pid_t successor = peer_pid(connection.get());
  HandoverChannel channel(std::move(connection));
  spdlog::info("hand-over: pid {} ({}) asks to take over", successor, program_of(successor));
  const auto started = Clock::now();

  // 1. What the successor needs to open everything, while this process serves on.
  try {
    std::vector<int> descriptors = parts_.server.listening_descriptors();
    descriptors.push_back(parts_.control_fd);
    if (parts_.metrics_fd >= 0) descriptors.push_back(parts_.metrics_fd);
    channel.send(handover::state_to_json(state()), descriptors, Clock::now() + kStepTimeout);
    HandoverMessage answer = channel.receive(Clock::now() + kOpenTimeout);
    const std::string type = handover::type_of(answer.body);
    if (type == "abort") {
      spdlog::warn("hand-over: pid {} took the state (every export's key with it) and could not start ({}); "
                   "serving on",
                   successor, handover::reason_of(answer.body));
      return false;
    }
    if (type != "ready") throw HandoverError("hand-over: expected 'ready', got '" + type + "'");
  } catch (const std::exception& e) {
    spdlog::warn("{}; serving on", e.what());
    return false;
  }

  // 2. The pause: from here on, every failure gives the clients back to this process.
  const auto pause_began = Clock::now();
  std::vector<nbd::PausedConnection> connections =
      parts_.server.pause_for_handover(Clock::now() + kPauseTimeout);
  try {
    if (!flush_all()) throw HandoverError("hand-over: the last flush failed");
    for (const auto& c : connections) {
      const int fd = c.fd;
      channel.send(handover::connection_to_json(c), std::span<const int>(&fd, 1), Clock::now() + kStepTimeout);
    }
    Json paused = handover::message("paused");
    paused["connections"] = connections.size();
    channel.send(paused, Clock::now() + kStepTimeout);
    HandoverMessage answer = channel.receive(Clock::now() + kStepTimeout);
    const std::string type = handover::type_of(answer.body);
    if (type != "adopted") throw HandoverError("hand-over: expected 'adopted', got '" + type + "'");
    channel.send(handover::message("commit"), Clock::now() + kStepTimeout);
    for (const auto& e : *parts_.server.exports().all()) e->device->handover_committed(false);
  } catch (const std::exception& e) {
    spdlog::warn("{}; taking the {} connection{} back and serving on", e.what(), connections.size(),
                 connections.size() == 1 ? "" : "s");
    parts_.server.resume_after_handover();
    try {
      Json resume = handover::message("resume");
      resume["message"] = WipingString(e.what());
      channel.send(resume, Clock::now() + std::chrono::seconds(1));
    } catch (const std::exception&) {
      // The successor is gone or stuck: it serves nothing without our commit while we live.
    }
    return false;
  }

  const auto committed = Clock::now();
  if (parts_.on_handed_over) parts_.on_handed_over();
  notify_main_pid(successor);
  parts_.server.finish_handover();
  const auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  spdlog::info("hand-over: pid {} took over {} connection{} after a pause of {} ms ({} ms in all); stopping",
               successor, connections.size(), connections.size() == 1 ? "" : "s", ms(committed - pause_began),
               ms(committed - started));
  return true;
}

bool HandoverSource::flush_all() {
  std::vector<std::shared_ptr<const nbd::Export>> held_in_process;
  for (const auto& e : *parts_.server.exports().all()) {
    // A file's writes are in the page cache the successor reads through: an fsync would only
    // make the pause as long as the disk is slow (measured: 0.6-0.9 s under 4 KiB random
    // writes). librbd's cache, in this process, must be emptied.
    if (!e->device->capabilities().writes_shared_at_once) held_in_process.push_back(e);
  }
  const nbd::FlushOutcome outcome = nbd::flush_exports(held_in_process, kFlushTimeout);
  for (const auto& [name, ec] : outcome.failed)
    spdlog::error("hand-over: export '{}': flush failed: {}", name, ec.message());
  if (!outcome.unanswered.empty())
    spdlog::error("hand-over: {} export(s) did not finish their flush within {} s", outcome.unanswered.size(),
                  kFlushTimeout.count());
  return outcome.ok();
}

}  // namespace volgate::gateway
