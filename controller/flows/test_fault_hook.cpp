#include "controller/flows/test_fault_hook.hpp"

#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace volgate::controller {
namespace {

constexpr unsigned kMaxStallMs = 60000;

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    size_t end = text.find(separator, start);
    out.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

}  // namespace

TestFault parse_test_fault(TestFault::Action action, std::string_view spec, const std::string& what) {
  const auto parts = split(spec, ':');
  const size_t want = action == TestFault::Action::kill ? 2 : 3;
  const char* form = action == TestFault::Action::kill ? "KIND:TASK" : "KIND:TASK:MS";
  if (parts.size() != want || parts[0].empty() || parts[1].empty())
    throw std::invalid_argument(what + ": expected " + form + ", got '" + std::string(spec) + "'");
  TestFault f{.action = action, .flow_kind = std::string(parts[0]), .task = std::string(parts[1])};
  if (f.task == "end") f.task = kAfterLastTask;
  if (action == TestFault::Action::stall) {
    const auto ms = parts[2];
    auto [end, ec] = std::from_chars(ms.data(), ms.data() + ms.size(), f.stall_ms);
    if (ec != std::errc() || end != ms.data() + ms.size() || f.stall_ms > kMaxStallMs)
      throw std::invalid_argument(what + ": MS must be a number of milliseconds up to " +
                                  std::to_string(kMaxStallMs) + ", got '" + std::string(ms) + "'");
  }
  return f;
}

BeforeTask test_fault_hook(const TestFault& fault) {
  return [fault](const std::string& kind, const std::string& task) {
    if (kind != fault.flow_kind || task != fault.task) return;
    if (fault.action == TestFault::Action::kill) {
      spdlog::warn("test hook: SIGKILL before {}:{}", kind, task);
      spdlog::default_logger()->flush();
      std::raise(SIGKILL);
    }
    spdlog::warn("test hook: stalling {} ms before {}:{}", fault.stall_ms, kind, task);
    spdlog::default_logger()->flush();
    std::this_thread::sleep_for(std::chrono::milliseconds(fault.stall_ms));
  };
}

BeforeTask test_fault_hook_from_environment() {
  const char* kill = std::getenv("VOLGATE_TEST_KILL_BEFORE");
  const char* stall = std::getenv("VOLGATE_TEST_STALL_BEFORE");
  if (kill && *kill && stall && *stall)
    throw std::invalid_argument("VOLGATE_TEST_KILL_BEFORE and VOLGATE_TEST_STALL_BEFORE: set one of them");
  std::optional<TestFault> fault;
  if (kill && *kill) fault = parse_test_fault(TestFault::Action::kill, kill, "VOLGATE_TEST_KILL_BEFORE");
  if (stall && *stall) fault = parse_test_fault(TestFault::Action::stall, stall, "VOLGATE_TEST_STALL_BEFORE");
  if (!fault) return {};
  spdlog::warn("test hook armed: {} before {}:{}", fault->action == TestFault::Action::kill ? "SIGKILL" : "stall",
               fault->flow_kind, fault->task);
  return test_fault_hook(*fault);
}

}  // namespace volgate::controller
