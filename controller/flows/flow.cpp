#include "controller/flows/flow.hpp"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <exception>

namespace volgate::controller {

std::string new_uuid() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) throw std::runtime_error("no random bytes for a UUID");
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return out;
}

Flow::Flow(Store& store, std::string kind, std::string resource_id, std::vector<Task> tasks,
           nlohmann::json context, BeforeTask before_task)
    : store_(store), tasks_(std::move(tasks)), context_(std::move(context)), before_task_(std::move(before_task)) {
  record_.id = new_uuid();
  record_.kind = std::move(kind);
  record_.resource_id = std::move(resource_id);
}

Flow::Flow(Store& store, const FlowRecord& record, std::vector<Task> tasks)
    : store_(store), record_(record), tasks_(std::move(tasks)) {
  context_ = nlohmann::json::parse(record.context, nullptr, false);
  if (context_.is_discarded()) context_ = nlohmann::json::object();
  next_ = static_cast<size_t>(std::max(record.task, 0));
}

void Flow::journal() {
  // The context holds ids from request paths, which may be any bytes: write them, never throw.
  record_.context = context_.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  store_.journal_write(record_);
}

void Flow::run(size_t until) {
  while (!finished_ && next_ < tasks_.size() && next_ < until) {
    const Task& task = tasks_[next_];
    record_.task = static_cast<int>(next_);
    record_.phase = FlowRecord::Phase::running;
    try {
      journal();
      if (before_task_) before_task_(record_.kind, task.name);
      task.execute(context_);
    } catch (const std::exception& e) {
      spdlog::warn("flow {} {} ({}): task {} failed: {}", record_.kind, record_.id, record_.resource_id, task.name,
                   e.what());
      revert_from(next_, e.what());
      throw;
    }
    ++next_;
  }
  if (next_ >= tasks_.size() && !finished_) {
    if (before_task_) before_task_(record_.kind, kAfterLastTask);
    finished_ = true;
    store_.journal_remove(record_.id);
  }
}

void Flow::revert(const std::string& why) {
  if (finished_) return;
  revert_from(std::min(next_, tasks_.size() - 1), why);
}

void Flow::resume() {
  spdlog::info("flow {} {} ({}): resuming at task {}", record_.kind, record_.id, record_.resource_id,
               next_ < tasks_.size() ? tasks_[next_].name : "end");
  run();
}

void Flow::revert_from(size_t index, const std::string& why) {
  if (!context_.contains("error")) context_["error"] = why;
  record_.phase = FlowRecord::Phase::reverting;
  for (size_t i = index + 1; i-- > 0;) {
    record_.task = static_cast<int>(i);
    const Task& task = tasks_[i];
    try {
      journal();
    } catch (const std::exception& e) {
      // Revert anyway: a resource left behind costs more than a journal one step behind.
      spdlog::error("flow {} {}: cannot journal the revert of {}: {}", record_.kind, record_.id, task.name,
                    e.what());
    }
    try {
      if (task.revert) task.revert(context_);
    } catch (const std::exception& e) {
      // A revert that fails leaves its resource for an operator (the statuses say which);
      // the earlier tasks are still reverted, so quota and DB state stay accurate.
      spdlog::error("flow {} {} ({}): reverting {} failed: {}", record_.kind, record_.id, record_.resource_id,
                    task.name, e.what());
    }
  }
  finished_ = true;
  try {
    store_.journal_remove(record_.id);
  } catch (const std::exception& e) {
    spdlog::error("flow {} {}: cannot clear its journal entry: {}", record_.kind, record_.id, e.what());
  }
}

}  // namespace volgate::controller
