// The flow engine: order, revert in reverse (the failed task included), journal, recovery.
#include <gtest/gtest.h>

#include "controller/flows/flow.hpp"
#include "controller/metrics/controller_metrics.hpp"
#include "controller/store/sqlite_store.hpp"

namespace volgate::controller {
namespace {

// A context as flows have them: the outcome plus fields of its own, journaled as JSON.
struct TestContext {
  FlowOutcome outcome;
  std::vector<std::string> done;  // the tasks that ran
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TestContext, outcome, done)

using TestFlow = Flow<TestContext>;

struct Recorder {
  std::vector<std::string> events;
  std::vector<Task<TestContext>> tasks(int n, int fail_at = -1) {
    std::vector<Task<TestContext>> out;
    for (int i = 0; i < n; ++i) {
      std::string name = "t" + std::to_string(i);
      out.push_back({name,
                     [this, name, i, fail_at](TestContext& c) {
                       events.push_back("do " + name);
                       c.done.push_back(name);
                       if (i == fail_at) throw std::runtime_error(name + " broke");
                     },
                     [this, name](TestContext&) { events.push_back("undo " + name); }});
    }
    return out;
  }
};

TEST(Flow, RunsEveryTaskInOrderAndClearsItsJournal) {
  SqliteStore store(":memory:");
  Recorder r;
  TestFlow flow(store, "k", "res", r.tasks(3), {});
  flow.run();
  EXPECT_TRUE(flow.finished());
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t0", "do t1", "do t2"}));
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, AFailureRevertsWhatRanInReverseOrderIncludingTheFailedTask) {
  SqliteStore store(":memory:");
  Recorder r;
  TestFlow flow(store, "k", "res", r.tasks(4, 2), {});
  try {
    flow.run();
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "t2 broke");
  }
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t0", "do t1", "do t2", "undo t2", "undo t1", "undo t0"}));
  EXPECT_EQ(flow.context().outcome.error, "t2 broke");
  EXPECT_TRUE(flow.finished());
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, RunsInTwoPartsAndJournalsTheTaskInProgress) {
  SqliteStore store(":memory:");
  Recorder r;
  TestFlow flow(store, "k", "res", r.tasks(4), {});
  flow.run_through("t1");
  EXPECT_FALSE(flow.finished());
  // While paused, the journal says task 1 was the last started, with its context.
  auto rows = store.journal_unfinished();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].kind, "k");
  EXPECT_EQ(rows[0].resource_id, "res");
  EXPECT_EQ(rows[0].task, 1);
  flow.run();
  EXPECT_TRUE(flow.finished());
  EXPECT_EQ(r.events.size(), 4u);
}

// The count of `series` in the controller's metrics now ("absent" when it has none).
std::string metric(const std::string& series) {
  MetricsReport report;
  ControllerMetrics::process().report(report);
  const std::string text = report.text();
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return "absent";
  const size_t start = at + series.size() + 2;
  return text.substr(start, text.find('\n', start) - start);
}

TEST(Flow, CountsStartsEndsAndDurationsByKindOnceEach) {
  SqliteStore store(":memory:");
  Recorder r;
  {
    TestFlow ok(store, "metered", "a", r.tasks(3), {});
    ok.run_through("t0");  // a flow run in two parts starts once
    ok.run();
    ok.run();  // and ends once
    TestFlow broken(store, "metered", "b", r.tasks(3, 1), {});
    EXPECT_THROW(broken.run(), std::runtime_error);
    broken.revert("again");  // a finished flow reverts nothing more
  }
  EXPECT_EQ(metric("volgate_controller_flows_started_total{kind=\"metered\"}"), "2");
  EXPECT_EQ(metric("volgate_controller_flows_finished_total{kind=\"metered\"}"), "1");
  EXPECT_EQ(metric("volgate_controller_flows_reverted_total{kind=\"metered\"}"), "1");
  EXPECT_EQ(metric("volgate_controller_flow_duration_seconds_count{kind=\"metered\"}"), "2");
  EXPECT_EQ(metric("volgate_controller_flow_duration_seconds_bucket{kind=\"metered\",le=\"120\"}"), "2");
}

TEST(Flow, ARecoveredFlowRevertsFromTheTaskThatWasRunning) {
  SqliteStore store(":memory:");
  Recorder r;
  FlowRecord rec{.id = "f", .kind = "k", .resource_id = "res", .task = 2, .context = R"({"done":["t0"]})"};
  store.journal_write(rec);
  TestFlow flow(store, rec, r.tasks(4));
  EXPECT_EQ(flow.context().done, std::vector<std::string>{"t0"});
  flow.revert("restart");
  EXPECT_EQ(r.events, (std::vector<std::string>{"undo t2", "undo t1", "undo t0"}));
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, ARecoveredFlowResumesAtTheTaskThatWasRunning) {
  SqliteStore store(":memory:");
  Recorder r;
  FlowRecord rec{.id = "f", .kind = "k", .resource_id = "res", .task = 1, .context = "{}"};
  store.journal_write(rec);
  TestFlow flow(store, rec, r.tasks(3));
  flow.resume();
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t1", "do t2"}));
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, AFailingRevertDoesNotStopTheOthers) {
  SqliteStore store(":memory:");
  std::vector<std::string> events;
  std::vector<Task<TestContext>> tasks{
      {"a", [](TestContext&) {}, [&](TestContext&) { events.push_back("undo a"); }},
      {"b", [](TestContext&) {}, [](TestContext&) { throw std::runtime_error("cannot undo b"); }},
      {"c", [](TestContext&) { throw std::runtime_error("c broke"); }, {}},
  };
  TestFlow flow(store, "k", "res", tasks, {});
  EXPECT_THROW(flow.run(), std::runtime_error);
  EXPECT_EQ(events, std::vector<std::string>{"undo a"});
}

TEST(Flow, BeforeTaskCanInjectAFailure) {
  SqliteStore store(":memory:");
  Recorder r;
  TestFlow flow(store, "k", "res", r.tasks(3), {}, [](const std::string& kind, const std::string& task) {
    if (kind == "k" && task == "t1") throw std::runtime_error("injected");
  });
  EXPECT_THROW(flow.run(), std::runtime_error);
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t0", "undo t1", "undo t0"}));
}

TEST(Flow, TheContextIsJournaledAsJsonAndRunThroughNamesATask) {
  SqliteStore store(":memory:");
  Recorder r;
  TestFlow flow(store, "k", "res", r.tasks(3), {});
  flow.run_through("t1");
  // Journaled as each task starts: t1's entry holds what t0 wrote.
  auto rows = store.journal_unfinished();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(rows[0].context)["done"], nlohmann::json::array({"t0"}));
  EXPECT_THROW(flow.run_through("no-such-task"), std::logic_error);
  flow.run();
  EXPECT_TRUE(flow.finished());
}

TEST(Flow, UuidsAreVersion4) {
  std::string a = new_uuid();
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '4');
  EXPECT_NE(a, new_uuid());
}

}  // namespace
}  // namespace volgate::controller
