#pragma once
// A linear flow of named tasks, each with a revert: the shape of every mutating operation
// (create, extend, delete, snapshot, attach). Tasks run in order; when one fails, every task
// that ran, the failed one included (it may have done part of its work), is reverted in
// reverse order.
//
// Each flow has a typed context (a struct, so a misspelt field fails to compile) that its tasks
// read and write. The flow journal (Store::journal_*) records which task is running and the
// context as JSON, after every step. A controller killed mid-flow rebuilds the flow from its
// journal row at start and either reverts it or runs it to the end (see flow_registry.hpp), so
// every task's execute and revert must be idempotent and cope with a half-done or never-started
// task.
#include <chrono>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "controller/store/flow_record.hpp"
#include "controller/store/store.hpp"

namespace volgate::controller {

// What every context carries besides its own fields: whether the caller has been answered
// (from then on a failure shows in the resource's status instead of an error answer), and
// why the flow failed.
struct FlowOutcome {
  bool accepted = false;
  std::string error;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(FlowOutcome, accepted, error)

// What a restarted controller does with a flow of a kind that it finds half done: undo it, or
// finish what the user asked for (deletes). Either way a flow already in its last task is
// finished, since its work is done.
enum class OnRestart { revert, resume };

template <class Context>
struct Task {
  std::string name;
  std::function<void(Context&)> execute;
  std::function<void(Context&)> revert;  // may be empty: nothing to undo
  // Whether the earlier tasks' reverts need this one's to have succeeded. Normally a revert
  // that fails is logged and the earlier tasks are reverted all the same (a resource left for
  // an operator). Where that would be unsafe (a disk still in a guest while its volume goes
  // back to available), the flow instead stops reverting there and stays in the journal, so
  // that a later recovery (parked(), see Flow::recover) reverts it from this task again.
  bool revert_must_succeed = false;
};

// Called before each task runs, and once more with kAfterLastTask when the last task is done
// but the journal entry not yet cleared; tests throw or die from it to inject a failure there.
using BeforeTask = std::function<void(const std::string& flow_kind, const std::string& task)>;
inline constexpr const char* kAfterLastTask = "(after the last task)";

// The untyped core: order, journal, revert. Flow<Context> below is what flows use.
class FlowRunner {
 public:
  struct Step {
    std::string name;
    std::function<void()> execute;
    std::function<void()> revert;
    bool revert_must_succeed = false;
  };

  // `journal_text` gives the context as it is now; `outcome` is the context's FlowOutcome.
  FlowRunner(Store& store, FlowRecord record, std::vector<Step> steps, std::function<std::string()> journal_text,
             FlowOutcome& outcome, BeforeTask before_task);

  void run(size_t until);
  void revert(const std::string& why);
  void resume();
  void recover(bool finish);
  // Index of the task called `name`; throws std::logic_error when there is none (a typo).
  size_t index_of(std::string_view name) const;

  bool finished() const { return finished_; }
  bool parked() const { return parked_; }
  const FlowRecord& record() const { return record_; }
  size_t task_count() const { return steps_.size(); }

 private:
  void journal();
  void revert_from(size_t index, const std::string& why);
  // Counts the flow as started in this process (ControllerMetrics), once.
  void note_started();
  void note_ended(bool reverted);

  Store& store_;
  FlowRecord record_;
  std::vector<Step> steps_;
  std::function<std::string()> journal_text_;
  FlowOutcome& outcome_;
  BeforeTask before_task_;
  size_t next_ = 0;
  bool finished_ = false;
  bool parked_ = false;  // a revert_must_succeed revert failed: left in the journal
  std::optional<std::chrono::steady_clock::time_point> started_;  // by note_started()
};

template <class Context>
class Flow {
 public:
  // A new flow; nothing is journaled until it starts.
  Flow(Store& store, std::string kind, std::string resource_id, std::vector<Task<Context>> tasks, Context context,
       BeforeTask before_task = {})
      : context_(std::move(context)),
        runner_(store, new_record(std::move(kind), std::move(resource_id)), steps(std::move(tasks)),
                [this] { return text(); }, context_.outcome, std::move(before_task)) {}

  // A flow found in the journal after a restart, with the tasks of its kind.
  Flow(Store& store, const FlowRecord& record, std::vector<Task<Context>> tasks, BeforeTask before_task = {})
      : context_(from_journal(record.context)),
        runner_(store, record, steps(std::move(tasks)), [this] { return text(); }, context_.outcome,
                std::move(before_task)) {}

  Flow(const Flow&) = delete;  // the tasks hold the context's address
  Flow& operator=(const Flow&) = delete;

  // Runs every task that is left. On a failure reverts every task that ran and rethrows the
  // failure (the original exception, so an ApiError keeps its kind).
  void run() { runner_.run(std::numeric_limits<size_t>::max()); }
  // Runs up to and including the task called `name`: the point where the caller is answered.
  void run_through(std::string_view name) { runner_.run(runner_.index_of(name) + 1); }
  void revert(const std::string& why) { runner_.revert(why); }
  void resume() { runner_.resume(); }
  // For a flow found in the journal: finishes it when `finish` (and it was running, not
  // reverting), else reverts it, with "the controller stopped before the operation finished"
  // as the error. Either way the caller had its answer (accepted). Logs a failure, never throws.
  void recover(bool finish) { runner_.recover(finish); }
  // Whether the previous run was in the last task: its work is done (and reverting it would undo
  // what the user was told had succeeded), so a recovery finishes it.
  bool was_in_last_task() const { return static_cast<size_t>(record().task) + 1 == task_count(); }

  bool finished() const { return runner_.finished(); }
  // Whether the flow stopped reverting at a task whose revert must succeed and failed: it is
  // in the journal, half reverted, for a recovery to revert again (from a journal read anew).
  bool parked() const { return runner_.parked(); }
  Context& context() { return context_; }
  const FlowRecord& record() const { return runner_.record(); }
  size_t task_count() const { return runner_.task_count(); }
  // Index of the task called `name` (std::logic_error for a typo).
  size_t index_of(std::string_view name) const { return runner_.index_of(name); }

 private:
  static FlowRecord new_record(std::string kind, std::string resource_id);
  static Context from_journal(const std::string& text) {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    Context c;
    if (!j.is_discarded() && j.is_object()) c = j.get<Context>();
    return c;
  }
  // Ids from request paths may be any bytes: write them, never throw.
  std::string text() const {
    return nlohmann::json(context_).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::vector<FlowRunner::Step> steps(std::vector<Task<Context>> tasks) {
    std::vector<FlowRunner::Step> out;
    for (auto& t : tasks) {
      FlowRunner::Step step{t.name, [this, f = std::move(t.execute)] { f(context_); }, {}, t.revert_must_succeed};
      if (t.revert) step.revert = [this, f = std::move(t.revert)] { f(context_); };
      out.push_back(std::move(step));
    }
    return out;
  }

  Context context_;
  FlowRunner runner_;
};

std::string new_uuid();

template <class Context>
FlowRecord Flow<Context>::new_record(std::string kind, std::string resource_id) {
  FlowRecord record;
  record.id = new_uuid();
  record.kind = std::move(kind);
  record.resource_id = std::move(resource_id);
  return record;
}

}  // namespace volgate::controller
