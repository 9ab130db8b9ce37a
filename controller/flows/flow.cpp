#include "controller/flows/flow.hpp"

#include "controller/metrics/controller_metrics.hpp"

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

FlowRunner::FlowRunner(Store& store, FlowRecord record, std::vector<Step> steps,
                       std::function<std::string()> journal_text, FlowOutcome& outcome, BeforeTask before_task)
    : store_(store),
      record_(std::move(record)),
      steps_(std::move(steps)),
      journal_text_(std::move(journal_text)),
      outcome_(outcome),
      before_task_(std::move(before_task)),
      next_(static_cast<size_t>(std::max(record_.task, 0))) {}

size_t FlowRunner::index_of(std::string_view name) const {
  for (size_t i = 0; i < steps_.size(); ++i)
    if (steps_[i].name == name) return i;
  throw std::logic_error("flow " + record_.kind + " has no task '" + std::string(name) + "'");
}

void FlowRunner::journal() {
  record_.context = journal_text_();
  store_.journal_write(record_);
}

void FlowRunner::note_started() {
  if (started_) return;
  started_ = std::chrono::steady_clock::now();
  ControllerMetrics::process().flow_started(record_.kind);
}

void FlowRunner::note_ended(bool reverted) {
  note_started();  // a flow reverted before it ran (recovered from the journal) started now
  ControllerMetrics::process().flow_ended(
      record_.kind, reverted ? ControllerMetrics::FlowEnd::reverted : ControllerMetrics::FlowEnd::finished,
      std::chrono::steady_clock::now() - *started_);
}

void FlowRunner::run(size_t until) {
  note_started();
  while (!finished_ && next_ < steps_.size() && next_ < until) {
    const Step& step = steps_[next_];
    record_.task = static_cast<int>(next_);
    record_.phase = FlowRecord::Phase::running;
    try {
      journal();
      if (before_task_) before_task_(record_.kind, step.name);
      step.execute();
    } catch (const std::exception& e) {
      spdlog::warn("flow {} {} ({}): task {} failed: {}", record_.kind, record_.id, record_.resource_id, step.name,
                   e.what());
      revert_from(next_, e.what());
      throw;
    }
    ++next_;
  }
  if (next_ >= steps_.size() && !finished_) {
    if (before_task_) before_task_(record_.kind, kAfterLastTask);
    finished_ = true;
    store_.journal_remove(record_.id);
    note_ended(false);
  }
}

void FlowRunner::revert(const std::string& why) {
  if (finished_) return;
  revert_from(std::min(next_, steps_.size() - 1), why);
}

void FlowRunner::resume() {
  spdlog::info("flow {} {} ({}): resuming at task {}", record_.kind, record_.id, record_.resource_id,
               next_ < steps_.size() ? steps_[next_].name : "end");
  run(std::numeric_limits<size_t>::max());
}

void FlowRunner::recover(bool finish) {
  outcome_.accepted = true;  // whoever started it got an answer, or lost the connection
  try {
    if (finish && record_.phase == FlowRecord::Phase::running) {
      resume();
      return;
    }
    spdlog::warn("flow {} {} ({}): reverting what the previous run left half done", record_.kind, record_.id,
                 record_.resource_id);
    // A flow parked by a revert that failed keeps the failure that started its revert.
    if (outcome_.error.empty()) outcome_.error = "the controller stopped before the operation finished";
    revert(outcome_.error);
  } catch (const std::exception& e) {
    spdlog::error("flow {} {} ({}): could not finish or revert: {}", record_.kind, record_.id, record_.resource_id,
                  e.what());
  }
}

void FlowRunner::revert_from(size_t index, const std::string& why) {
  if (outcome_.error.empty()) outcome_.error = why;
  record_.phase = FlowRecord::Phase::reverting;
  for (size_t i = index + 1; i-- > 0;) {
    record_.task = static_cast<int>(i);
    const Step& step = steps_[i];
    try {
      journal();
    } catch (const std::exception& e) {
      // Revert anyway: a resource left behind costs more than a journal one step behind.
      spdlog::error("flow {} {}: cannot journal the revert of {}: {}", record_.kind, record_.id, step.name,
                    e.what());
    }
    try {
      if (step.revert) step.revert();
    } catch (const std::exception& e) {
      if (step.revert_must_succeed) {
        // The earlier tasks wait for this one: the journal keeps the flow here, reverting.
        spdlog::error("flow {} {} ({}): reverting {} failed: {}; the flow stays half reverted in the journal and is "
                      "reverted again at the next recovery",
                      record_.kind, record_.id, record_.resource_id, step.name, e.what());
        finished_ = true;
        parked_ = true;
        note_ended(true);
        return;
      }
      // A revert that fails leaves its resource for an operator (the statuses say which);
      // the earlier tasks are still reverted, so quota and DB state stay accurate.
      spdlog::error("flow {} {} ({}): reverting {} failed: {}", record_.kind, record_.id, record_.resource_id,
                    step.name, e.what());
    }
  }
  finished_ = true;
  note_ended(true);
  try {
    store_.journal_remove(record_.id);
  } catch (const std::exception& e) {
    spdlog::error("flow {} {}: cannot clear its journal entry: {}", record_.kind, record_.id, e.what());
  }
}

}  // namespace volgate::controller
