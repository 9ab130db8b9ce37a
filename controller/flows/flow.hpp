#pragma once
// A linear flow of named tasks, each with a revert: the shape of every mutating operation
// (create, extend, delete, snapshot). Tasks run in order; when one fails, every task that ran,
// the failed one included (it may have done part of its work), is reverted in reverse order.
//
// The flow journal (Store::journal_*) records which task is running and what the tasks wrote
// into the context, after every step. A controller killed mid-flow rebuilds the flow from its
// journal row at start and either reverts it or runs it to the end (OnRestart), so every task's
// execute and revert must be idempotent and must cope with a half-done or never-started task.
#include <cstddef>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controller/store/flow_record.hpp"
#include "controller/store/store.hpp"

namespace volgate::controller {

struct Task {
  std::string name;
  std::function<void(nlohmann::json& context)> execute;
  std::function<void(nlohmann::json& context)> revert;  // may be empty: nothing to undo
};

// What a restarted controller does with a flow it finds half done.
enum class OnRestart { revert, resume };

// Called before each task runs, and once more with kAfterLastTask when the last task is done
// but the journal entry not yet cleared; tests throw or die from it to inject a failure there.
using BeforeTask = std::function<void(const std::string& flow_kind, const std::string& task)>;
inline constexpr const char* kAfterLastTask = "(after the last task)";

class FlowFailed : public std::runtime_error {
 public:
  FlowFailed(const std::string& task, const std::string& why)
      : std::runtime_error(why), task(task) {}
  const std::string task;
};

class Flow {
 public:
  // A new flow; nothing is journaled until run() starts it.
  Flow(Store& store, std::string kind, std::string resource_id, std::vector<Task> tasks,
       nlohmann::json context, BeforeTask before_task = {});
  // A flow found in the journal after a restart, with the tasks of its kind.
  Flow(Store& store, const FlowRecord& record, std::vector<Task> tasks);

  // Runs the tasks from the next one up to, not including, `until`. On a failure reverts every
  // task that ran and rethrows the failure (the original exception, so an ApiError keeps its
  // kind). The flow is finished and journaled no more after its last task or a revert.
  void run(size_t until = std::numeric_limits<size_t>::max());
  // Reverts from the task the journal says was running (for recovery, or to cancel).
  void revert(const std::string& why);
  // Runs the remaining tasks, starting again at the one that was running (for recovery).
  void resume();

  bool finished() const { return finished_; }
  const std::string& id() const { return record_.id; }
  const std::string& kind() const { return record_.kind; }
  const nlohmann::json& context() const { return context_; }
  nlohmann::json& context() { return context_; }
  size_t task_count() const { return tasks_.size(); }

 private:
  void journal();
  void revert_from(size_t index, const std::string& why);

  Store& store_;
  FlowRecord record_;
  std::vector<Task> tasks_;
  nlohmann::json context_;
  BeforeTask before_task_;
  size_t next_ = 0;
  bool finished_ = false;
};

std::string new_uuid();

}  // namespace volgate::controller
