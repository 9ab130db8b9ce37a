// The flow engine: order, revert in reverse (the failed task included), journal, recovery.
#include <gtest/gtest.h>

#include "controller/flows/flow.hpp"
#include "controller/store/sqlite_store.hpp"

namespace volgate::controller {
namespace {

struct Recorder {
  std::vector<std::string> events;
  std::vector<Task> tasks(int n, int fail_at = -1) {
    std::vector<Task> out;
    for (int i = 0; i < n; ++i) {
      std::string name = "t" + std::to_string(i);
      out.push_back({name,
                     [this, name, i, fail_at](nlohmann::json& c) {
                       events.push_back("do " + name);
                       c[name] = true;
                       if (i == fail_at) throw std::runtime_error(name + " broke");
                     },
                     [this, name](nlohmann::json&) { events.push_back("undo " + name); }});
    }
    return out;
  }
};

TEST(Flow, RunsEveryTaskInOrderAndClearsItsJournal) {
  SqliteStore store(":memory:");
  Recorder r;
  Flow flow(store, "k", "res", r.tasks(3), nlohmann::json::object());
  flow.run();
  EXPECT_TRUE(flow.finished());
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t0", "do t1", "do t2"}));
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, AFailureRevertsWhatRanInReverseOrderIncludingTheFailedTask) {
  SqliteStore store(":memory:");
  Recorder r;
  Flow flow(store, "k", "res", r.tasks(4, 2), nlohmann::json::object());
  try {
    flow.run();
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "t2 broke");
  }
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t0", "do t1", "do t2", "undo t2", "undo t1", "undo t0"}));
  EXPECT_EQ(flow.context()["error"], "t2 broke");
  EXPECT_TRUE(flow.finished());
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, RunsInTwoPartsAndJournalsTheTaskInProgress) {
  SqliteStore store(":memory:");
  Recorder r;
  Flow flow(store, "k", "res", r.tasks(4), nlohmann::json::object());
  flow.run(2);
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

TEST(Flow, ARecoveredFlowRevertsFromTheTaskThatWasRunning) {
  SqliteStore store(":memory:");
  Recorder r;
  FlowRecord rec{.id = "f", .kind = "k", .resource_id = "res", .task = 2, .context = R"({"t0":true})"};
  store.journal_write(rec);
  Flow flow(store, rec, r.tasks(4));
  EXPECT_EQ(flow.context()["t0"], true);
  flow.revert("restart");
  EXPECT_EQ(r.events, (std::vector<std::string>{"undo t2", "undo t1", "undo t0"}));
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, ARecoveredFlowResumesAtTheTaskThatWasRunning) {
  SqliteStore store(":memory:");
  Recorder r;
  FlowRecord rec{.id = "f", .kind = "k", .resource_id = "res", .task = 1, .context = "{}"};
  store.journal_write(rec);
  Flow flow(store, rec, r.tasks(3));
  flow.resume();
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t1", "do t2"}));
  EXPECT_TRUE(store.journal_unfinished().empty());
}

TEST(Flow, AFailingRevertDoesNotStopTheOthers) {
  SqliteStore store(":memory:");
  std::vector<std::string> events;
  std::vector<Task> tasks{
      {"a", [](nlohmann::json&) {}, [&](nlohmann::json&) { events.push_back("undo a"); }},
      {"b", [](nlohmann::json&) {}, [](nlohmann::json&) { throw std::runtime_error("cannot undo b"); }},
      {"c", [](nlohmann::json&) { throw std::runtime_error("c broke"); }, {}},
  };
  Flow flow(store, "k", "res", tasks, nlohmann::json::object());
  EXPECT_THROW(flow.run(), std::runtime_error);
  EXPECT_EQ(events, std::vector<std::string>{"undo a"});
}

TEST(Flow, BeforeTaskCanInjectAFailure) {
  SqliteStore store(":memory:");
  Recorder r;
  Flow flow(store, "k", "res", r.tasks(3), nlohmann::json::object(), [](const std::string& kind, const std::string& task) {
    if (kind == "k" && task == "t1") throw std::runtime_error("injected");
  });
  EXPECT_THROW(flow.run(), std::runtime_error);
  EXPECT_EQ(r.events, (std::vector<std::string>{"do t0", "undo t1", "undo t0"}));
}

TEST(Flow, UuidsAreVersion4) {
  std::string a = new_uuid();
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '4');
  EXPECT_NE(a, new_uuid());
}

}  // namespace
}  // namespace volgate::controller
