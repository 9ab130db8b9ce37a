// nbd::ExportTable while it changes: what sessions find, the default export, removal that
// waits for connected sessions, and readers racing a writer (run it in the TSan build too).
#include "nbd/export.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "backends/memory_device.hpp"

namespace volgate::nbd {
namespace {

Export memory_export(const std::string& name) {
  return {name, "memory", std::make_shared<backends::MemoryDevice>(1 << 20, false)};
}

using Outcome = ExportTable::Removal::Outcome;

TEST(ExportTable, AddFindListAndRefuseDuplicates) {
  ExportTable table;
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(table.find(""), nullptr);  // no default before the first export
  auto a = table.add(memory_export("a"));
  auto b = table.add(memory_export("b"));
  EXPECT_EQ(table.find("a"), a);
  EXPECT_EQ(table.find("b"), b);
  EXPECT_EQ(table.find(""), a);  // the first one added
  EXPECT_EQ(table.find("c"), nullptr);
  EXPECT_THROW(table.add(memory_export("a")), std::invalid_argument);
  EXPECT_THROW(table.add(memory_export("")), std::invalid_argument);
  auto list = table.all();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0]->name, "a");
  EXPECT_EQ((*list)[1]->name, "b");
}

TEST(ExportTable, RemovedDefaultLeavesNoDefault) {
  ExportTable table;
  table.add(memory_export("first"));
  table.add(memory_export("second"));
  EXPECT_EQ(table.remove("first", false).outcome, Outcome::removed);
  EXPECT_EQ(table.find(""), nullptr);
  table.add(memory_export("third"));
  EXPECT_EQ(table.find(""), nullptr);  // no export inherits the empty name
  EXPECT_EQ(table.remove("first", false).outcome, Outcome::not_found);
}

TEST(ExportTable, ASnapshotOutlivesChanges) {
  ExportTable table;
  table.add(memory_export("a"));
  auto before = table.all();
  table.add(memory_export("b"));
  table.remove("a", false);
  EXPECT_EQ(before->size(), 1u);  // what a listing session holds does not change under it
  EXPECT_EQ((*before)[0]->name, "a");
  EXPECT_EQ(table.all()->size(), 1u);
}

TEST(ExportTable, RemovalWaitsForConnectionsUnlessForced) {
  ExportTable table;
  auto e = table.add(memory_export("vol"));
  ASSERT_TRUE(table.attach(*e));
  EXPECT_EQ(e->counters->connections.load(), 1u);
  auto refused = table.remove("vol", false);
  EXPECT_EQ(refused.outcome, Outcome::busy);
  EXPECT_EQ(refused.connections, 1u);
  EXPECT_EQ(table.find("vol"), e);  // still served

  auto forced = table.remove("vol", true);
  EXPECT_EQ(forced.outcome, Outcome::removed);
  EXPECT_EQ(forced.removed, e);
  EXPECT_EQ(forced.connections, 1u);
  EXPECT_EQ(table.find("vol"), nullptr);
  table.detach(*e);
  EXPECT_EQ(e->counters->connections.load(), 0u);
}

TEST(ExportTable, ASessionThatFoundARemovedExportCannotAttach) {
  ExportTable table;
  auto old = table.add(memory_export("vol"));
  ASSERT_EQ(table.remove("vol", false).outcome, Outcome::removed);
  EXPECT_FALSE(table.attach(*old));
  // Nor to the old one when the name is served again by another export.
  auto renewed = table.add(memory_export("vol"));
  EXPECT_FALSE(table.attach(*old));
  EXPECT_TRUE(table.attach(*renewed));
  EXPECT_EQ(old->counters->connections.load(), 0u);
}

// Sessions on many threads look exports up and attach while the control thread adds and
// removes them: every attach either counts on a served export or is refused, and the counts
// end at zero. TSan checks the rest.
TEST(ExportTable, ConcurrentReadersAndAWriter) {
  ExportTable table;
  table.add(memory_export("stable"));
  std::atomic<bool> done{false};
  std::atomic<uint64_t> attached{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      uint64_t n = 0;
      while (!done.load()) {
        auto name = "vol" + std::to_string((n + t) % 8);
        if (auto e = table.find(name)) {
          if (table.attach(*e)) {
            ++attached;
            e->counters->answered(nbd::RequestKind::read, 4096);
            table.detach(*e);
          }
        }
        auto list = table.all();
        for (const auto& e : *list) EXPECT_FALSE(e->name.empty());
        EXPECT_NE(table.find("stable"), nullptr);
        ++n;
      }
    });
  }
  // At least 2000 changes, and on until the readers attached often enough to have raced them.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int round = 0; round < 2000 || (attached.load() < 1000 && std::chrono::steady_clock::now() < give_up); ++round) {
    const std::string name = "vol" + std::to_string(round % 8);
    if (table.find(name))
      table.remove(name, true);
    else
      table.add(memory_export(name));
  }
  done = true;
  for (auto& r : readers) r.join();
  for (const auto& e : *table.all()) EXPECT_EQ(e->counters->connections.load(), 0u) << e->name;
  EXPECT_GE(attached.load(), 1000u);
}

}  // namespace
}  // namespace volgate::nbd
