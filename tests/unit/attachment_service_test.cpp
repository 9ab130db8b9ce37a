// Cinder's attachment flows over real SQLite and a real file pool, with the gateway replaced by
// a fake that records what it serves (in a file, so that a controller killed in a forked child
// leaves its gateway's state behind like a real one would): statuses, exports and recovery
// must agree after every step, failure and crash.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "controller/api/api_error.hpp"
#include "controller/pools/file_pool.hpp"
#include "controller/store/sqlite_store.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {
namespace {

namespace fs = std::filesystem;

struct Injected : std::runtime_error {
  Injected() : std::runtime_error("injected failure") {}
};

// A gateway whose export names live in a file: one name per line, "NAME ro|rw KIND".
class FakeGateway final : public GatewayExports {
 public:
  explicit FakeGateway(fs::path file) : file_(std::move(file)) {}

  void publish(const std::string& name, const gateway::ExportSpec& target, bool read_only,
               const gateway::control::LuksKey* key) override {
    if (down) throw gateway::GatewayControlError(0, "connect: connection refused");
    auto all = read();
    const std::string line = name + (read_only ? " ro " : " rw ") +
                             (key ? (key->kind == gateway::control::LuksKey::Kind::passphrase ? "passphrase" : "key")
                                  : "plain");
    for (const auto& l : all)
      if (l.substr(0, l.find(' ')) == name) {
        if (l != line) throw gateway::GatewayControlError(409, "served with another target");
        return;
      }
    if (key) last_key.assign(key->bytes.chars(), key->bytes.size());
    last_target = target.path;
    all.insert(line);
    write(all);
  }
  bool withdraw(const std::string& name) override {
    if (down) throw gateway::GatewayControlError(0, "connect: connection refused");
    auto all = read();
    bool found = std::erase_if(all, [&](const std::string& l) { return l.substr(0, l.find(' ')) == name; }) > 0;
    write(all);
    return found;
  }
  std::vector<Served> list() override {
    if (down) throw gateway::GatewayControlError(0, "connect: connection refused");
    std::vector<Served> out;
    for (const auto& l : read()) out.push_back({l.substr(0, l.find(' ')), 0});
    return out;
  }
  int64_t instance() override { return 1; }
  const std::string& nbd_socket() const override { return socket_; }

  std::set<std::string> names() {
    std::set<std::string> out;
    for (const auto& l : read()) out.insert(l.substr(0, l.find(' ')));
    return out;
  }
  std::set<std::string> read() {
    std::set<std::string> out;
    std::ifstream in(file_);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.insert(line);
    return out;
  }
  void write(const std::set<std::string>& lines) {
    std::ofstream out(file_, std::ios::trunc);
    for (const auto& l : lines) out << l << "\n";
  }

  bool down = false;
  std::string last_key;
  std::string last_target;

 private:
  fs::path file_;
  std::string socket_ = "/run/test/nbd.sock";
};

class AttachmentTest : public ::testing::Test {
 public:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("att-" + std::to_string(::getpid()) + "-" +
                                       std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(dir);
    fs::create_directories(dir);
    config = default_config(dir);
    config.volume_types["shared"] = {.name = "shared", .extra_specs = {{"multiattach", "<is> True"}}};
    KeyWrap::create_key_file(dir / "master.key");
    gateway = std::make_unique<FakeGateway>(dir / "gateway-exports");
    open();
  }
  void TearDown() override {
    service.reset();
    store.reset();
    fs::remove_all(dir);
  }

  ServiceOptions options_failing_at(std::string kind, std::string task, bool die) {
    ServiceOptions options;
    options.run_inline = true;
    options.before_task = [this, kind, task, die](const std::string& k, const std::string& t) {
      if (k == (kind.empty() ? fail_kind : kind) && t == (task.empty() ? fail_task : task)) {
        if (die) ::_exit(0);
        throw Injected();
      }
    };
    return options;
  }

  std::unique_ptr<VolumeService> make_service(SqliteStore& s, ServiceOptions options) {
    std::vector<std::unique_ptr<Pool>> pools;
    pools.push_back(std::make_unique<FilePool>(config.pools[0]));
    auto out = std::make_unique<VolumeService>(config, s, std::move(pools), KeyWrap::from_file(dir / "master.key"),
                                               std::move(options));
    out->set_gateway(gateway.get());
    return out;
  }

  void open() {
    service.reset();
    store = std::make_unique<SqliteStore>(dir / "c.db");
    service = make_service(*store, options_failing_at("", "", false));
  }

  Volume create(const std::string& type = {}, bool encrypted = false) {
    CreateVolumeRequest r;
    r.project = "p";
    r.size_gb = 1;
    r.volume_type = type;
    r.encrypted = encrypted;
    return service->create_volume(r);
  }
  Attachment attach(const std::string& volume_id, bool with_connector, bool read_only = false) {
    CreateAttachmentRequest r{.project = "p", .volume_id = volume_id, .instance_uuid = "vm-1", .read_only = read_only};
    if (with_connector) {
      r.connector = R"({"host":"hv1","initiator":"x"})";
      r.host = "hv1";
    }
    return service->create_attachment(r);
  }
  VolumeStatus status(const std::string& id) { return service->get_volume("p", id).status; }

  template <class F>
  ApiError::Kind error_of(F&& f) {
    try {
      f();
    } catch (const ApiError& e) {
      return e.kind;
    } catch (const IllegalTransition&) {
      return ApiError::Kind::conflict;  // the API answers 409 for it
    }
    ADD_FAILURE() << "no ApiError";
    return ApiError::Kind::internal;
  }

  fs::path dir;
  ControllerConfig config;
  std::unique_ptr<FakeGateway> gateway;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<VolumeService> service;
  std::string fail_kind, fail_task;
};

TEST_F(AttachmentTest, ReserveConnectCompleteAndDelete) {
  Volume v = create();
  Attachment a = attach(v.id, false);
  EXPECT_EQ(a.status, AttachmentStatus::reserved);
  EXPECT_EQ(status(v.id), VolumeStatus::reserved);
  EXPECT_TRUE(gateway->names().empty());

  a = service->update_attachment("p", a.id, R"({"host":"hv1"})", "hv1");
  EXPECT_EQ(a.status, AttachmentStatus::attaching);
  EXPECT_EQ(a.export_name, "volume-" + v.id);
  EXPECT_EQ(a.host, "hv1");
  EXPECT_EQ(status(v.id), VolumeStatus::attaching);
  EXPECT_EQ(gateway->read(), std::set<std::string>{"volume-" + v.id + " rw plain"});
  EXPECT_NE(gateway->last_target.find(v.id), std::string::npos);
  // A host that sends its connector again (a retry) gets the same export.
  a = service->update_attachment("p", a.id, R"({"host":"hv1"})", "hv1");
  EXPECT_EQ(gateway->names().size(), 1u);

  a = service->complete_attachment("p", a.id);
  EXPECT_EQ(a.status, AttachmentStatus::attached);
  EXPECT_FALSE(a.attached_at.empty());
  EXPECT_EQ(status(v.id), VolumeStatus::in_use);
  EXPECT_EQ(error_of([&] { service->update_attachment("p", a.id, "{}", ""); }), ApiError::Kind::conflict);

  EXPECT_TRUE(service->delete_attachment("p", a.id).empty());
  EXPECT_EQ(status(v.id), VolumeStatus::available);
  EXPECT_TRUE(gateway->names().empty());
  EXPECT_EQ(error_of([&] { service->get_attachment("p", a.id); }), ApiError::Kind::not_found);
}

TEST_F(AttachmentTest, AnEncryptedVolumeIsServedWithItsOwnPassphrase) {
  Volume v = create("encrypted");
  Attachment a = attach(v.id, true);
  EXPECT_EQ(a.status, AttachmentStatus::attaching);
  EXPECT_EQ(gateway->read(), std::set<std::string>{"volume-" + v.id + " rw passphrase"});
  auto wrapped = store->find_volume(v.id)->wrapped_key;
  auto passphrase = KeyWrap::from_file(dir / "master.key").unwrap(wrapped, v.id);
  EXPECT_EQ(gateway->last_key, std::string(passphrase.chars(), passphrase.size()));
}

TEST_F(AttachmentTest, OneAttachmentUnlessTheTypeAllowsMultiattach) {
  Volume v = create();
  Attachment only = attach(v.id, true);
  EXPECT_EQ(error_of([&] { attach(v.id, true); }), ApiError::Kind::conflict);
  EXPECT_EQ(service->attachments_of(v.id).size(), 1u);
  service->delete_attachment("p", only.id);

  Volume shared = create("shared");
  Attachment a1 = attach(shared.id, true);
  service->complete_attachment("p", a1.id);
  Attachment a2 = attach(shared.id, true);
  Attachment a3 = attach(shared.id, true, /*read_only=*/true);
  EXPECT_EQ(status(shared.id), VolumeStatus::in_use);
  EXPECT_EQ(gateway->names(), (std::set<std::string>{"volume-" + shared.id, "volume-" + shared.id + "-ro"}));
  // The rw export stays while a2 holds it; the ro one goes with a3.
  EXPECT_EQ(service->delete_attachment("p", a1.id).size(), 2u);
  EXPECT_EQ(gateway->names().count("volume-" + shared.id), 1u);
  service->delete_attachment("p", a3.id);
  EXPECT_EQ(gateway->names(), std::set<std::string>{"volume-" + shared.id});
  EXPECT_EQ(status(shared.id), VolumeStatus::attaching);
  service->delete_attachment("p", a2.id);
  EXPECT_TRUE(gateway->names().empty());
  EXPECT_EQ(status(shared.id), VolumeStatus::available);
}

TEST_F(AttachmentTest, AnAttachedVolumeCannotBeDeletedOrExtended) {
  Volume v = create();
  Attachment a = attach(v.id, true);
  service->complete_attachment("p", a.id);
  EXPECT_EQ(error_of([&] { service->delete_volume("p", v.id); }), ApiError::Kind::conflict);
  EXPECT_EQ(error_of([&] { service->extend_volume("p", v.id, 2); }), ApiError::Kind::conflict);
  EXPECT_EQ(status(v.id), VolumeStatus::in_use);
  EXPECT_EQ(service->get_volume("p", v.id).size_gb, 1u);
}

TEST_F(AttachmentTest, BadRequestsChangeNothing) {
  Volume v = create();
  EXPECT_EQ(error_of([&] { attach("no-such-volume", true); }), ApiError::Kind::not_found);
  CreateAttachmentRequest other{.project = "q", .volume_id = v.id};
  EXPECT_EQ(error_of([&] { service->create_attachment(other); }), ApiError::Kind::not_found);
  EXPECT_EQ(error_of([&] { service->update_attachment("p", "nope", "{}", ""); }), ApiError::Kind::not_found);
  EXPECT_EQ(error_of([&] { service->delete_attachment("p", "nope"); }), ApiError::Kind::not_found);
  Attachment a = attach(v.id, false);
  EXPECT_EQ(error_of([&] { service->complete_attachment("p", a.id); }), ApiError::Kind::conflict);
  EXPECT_EQ(error_of([&] { service->get_attachment("q", a.id); }), ApiError::Kind::not_found);
  EXPECT_EQ(error_of([&] { service->delete_attachment("q", a.id); }), ApiError::Kind::not_found);
  EXPECT_EQ(status(v.id), VolumeStatus::reserved);
  EXPECT_TRUE(gateway->names().empty());
}

TEST_F(AttachmentTest, AGatewayThatDoesNotAnswerIs503AndLeavesTheReservation) {
  Volume v = create();
  Attachment a = attach(v.id, false);
  gateway->down = true;
  EXPECT_EQ(error_of([&] { service->update_attachment("p", a.id, "{}", ""); }), ApiError::Kind::service_unavailable);
  EXPECT_EQ(service->get_attachment("p", a.id).status, AttachmentStatus::reserved);
  EXPECT_EQ(status(v.id), VolumeStatus::reserved);
  // Deleting works without the gateway: the export check removes what is left later.
  service->delete_attachment("p", a.id);
  EXPECT_EQ(status(v.id), VolumeStatus::available);
}

TEST_F(AttachmentTest, VolumeActionsAroundAttachAndDetach) {
  Volume v = create();
  service->reserve_volume("p", v.id);
  EXPECT_EQ(status(v.id), VolumeStatus::reserved);
  EXPECT_EQ(error_of([&] { service->reserve_volume("p", v.id); }), ApiError::Kind::conflict);
  service->unreserve_volume("p", v.id);
  EXPECT_EQ(status(v.id), VolumeStatus::available);
  EXPECT_EQ(error_of([&] { service->begin_detaching("p", v.id); }), ApiError::Kind::conflict);

  Attachment a = attach(v.id, true);
  service->complete_attachment("p", a.id);
  service->begin_detaching("p", v.id);
  EXPECT_EQ(status(v.id), VolumeStatus::detaching);
  service->roll_detaching("p", v.id);
  EXPECT_EQ(status(v.id), VolumeStatus::in_use);
  service->begin_detaching("p", v.id);
  service->force_detach("p", v.id, "");
  EXPECT_EQ(status(v.id), VolumeStatus::available);
  EXPECT_TRUE(service->attachments_of(v.id).empty());
  EXPECT_TRUE(gateway->names().empty());
}

class CreateAttachmentRevert : public AttachmentTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CreateAttachmentRevert, LeavesTheVolumeAvailableAndNothingServed) {
  Volume v = create();
  fail_kind = "create_attachment";
  fail_task = GetParam();
  EXPECT_THROW(attach(v.id, true), Injected);
  EXPECT_EQ(status(v.id), VolumeStatus::available);
  EXPECT_TRUE(service->attachments_of(v.id).empty());
  EXPECT_TRUE(gateway->names().empty());
  EXPECT_TRUE(store->journal_unfinished().empty());
}

INSTANTIATE_TEST_SUITE_P(EachTask, CreateAttachmentRevert,
                         ::testing::Values("validate", "reserve", "mark_attaching", "publish_export"));

class UpdateAttachmentRevert : public AttachmentTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(UpdateAttachmentRevert, LeavesTheReservationAndNothingServed) {
  Volume v = create();
  Attachment a = attach(v.id, false);
  fail_kind = "update_attachment";
  fail_task = GetParam();
  EXPECT_THROW(service->update_attachment("p", a.id, "{}", "hv1"), Injected);
  Attachment after = service->get_attachment("p", a.id);
  EXPECT_EQ(after.status, AttachmentStatus::reserved);
  EXPECT_EQ(after.export_name, "");
  EXPECT_EQ(after.connector, "");
  EXPECT_EQ(status(v.id), VolumeStatus::reserved);
  EXPECT_TRUE(gateway->names().empty());
}

INSTANTIATE_TEST_SUITE_P(EachTask, UpdateAttachmentRevert,
                         ::testing::Values("validate", "mark_attaching", "publish_export"));

// ------------------------------------------------------------------------------ crash recovery

// Runs `body` in a forked controller that dies (_exit, nothing reverted) before `task` of
// `kind`, then recovers in this process and runs the export check as a started controller does.
template <class Body>
void crash_and_recover(AttachmentTest& t, const std::string& kind, const std::string& task, Body body) {
  t.service.reset();
  t.store.reset();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    SqliteStore store(t.dir / "c.db");
    auto service = t.make_service(store, t.options_failing_at(kind, task, true));
    try {
      body(*service);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "the child did not die at " << task;
  t.open();
  t.service->recover();
  t.service->reconcile_exports();
  EXPECT_TRUE(t.store->journal_unfinished().empty());
}

// After recovery: every export is held by an attachment and every held one is served; the
// volume's status is the one its attachments imply.
void expect_consistent(AttachmentTest& t, const std::string& volume_id) {
  std::set<std::string> held;
  auto attachments = t.service->attachments_of(volume_id);
  for (const auto& a : attachments)
    if (holds_export(a)) held.insert(a.export_name);
  EXPECT_EQ(t.gateway->names(), held);
  EXPECT_EQ(t.status(volume_id), status_for_attachments(attachments));
  for (const auto& a : attachments) EXPECT_NE(a.status, AttachmentStatus::detaching);
}

class AttachmentCrash : public AttachmentTest,
                        public ::testing::WithParamInterface<std::pair<const char*, const char*>> {};

TEST_P(AttachmentCrash, ARestartedControllerLeavesNoHalfAttachment) {
  const auto [kind, task] = GetParam();
  Volume v = create();
  std::string attachment_id;
  if (std::string(kind) != "create_attachment") {
    Attachment a = attach(v.id, std::string(kind) != "update_attachment");
    if (std::string(kind) == "delete_attachment") service->complete_attachment("p", a.id);
    attachment_id = a.id;
  }
  crash_and_recover(*this, kind, task, [&](VolumeService& s) {
    const std::string k = kind;
    if (k == "create_attachment")
      s.create_attachment({.project = "p", .volume_id = v.id, .instance_uuid = "vm", .connector = "{}", .host = "h"});
    else if (k == "update_attachment")
      s.update_attachment("p", attachment_id, "{}", "h");
    else if (k == "complete_attachment")
      s.complete_attachment("p", attachment_id);
    else
      s.delete_attachment("p", attachment_id);
  });
  expect_consistent(*this, v.id);
  const std::string k = kind;
  // A flow that died in its last task is finished at restart, its work being (nearly) done.
  const bool finished = std::string(task) == kAfterLastTask || std::string(task) == "publish_export";
  if (k == "create_attachment") {
    EXPECT_EQ(service->attachments_of(v.id).size(), finished ? 1u : 0u);
  }
  if (k == "delete_attachment") {
    EXPECT_TRUE(service->attachments_of(v.id).empty());  // a delete is always finished
    EXPECT_EQ(status(v.id), VolumeStatus::available);
  }
  // Whatever was left, the next attach (or detach) works.
  for (const auto& a : service->attachments_of(v.id)) service->delete_attachment("p", a.id);
  Attachment again = attach(v.id, true);
  EXPECT_EQ(again.status, AttachmentStatus::attaching);
}

INSTANTIATE_TEST_SUITE_P(
    EachStep, AttachmentCrash,
    ::testing::Values(std::pair{"create_attachment", "reserve"}, std::pair{"create_attachment", "mark_attaching"},
                      std::pair{"create_attachment", "publish_export"}, std::pair{"create_attachment", kAfterLastTask},
                      std::pair{"update_attachment", "mark_attaching"}, std::pair{"update_attachment", "publish_export"},
                      std::pair{"update_attachment", kAfterLastTask}, std::pair{"complete_attachment", "complete"},
                      std::pair{"complete_attachment", kAfterLastTask}, std::pair{"delete_attachment", "mark_detaching"},
                      std::pair{"delete_attachment", "withdraw_export"}, std::pair{"delete_attachment", "delete_record"},
                      std::pair{"delete_attachment", kAfterLastTask}));

TEST_F(AttachmentTest, TheExportCheckServesWhatAttachmentsHoldAndRemovesOrphans) {
  Volume v = create();
  Attachment a = attach(v.id, true);
  gateway->write({"volume-orphan rw plain", "operator-export rw plain"});  // a gateway restarted by hand
  ExportRepairs repairs = service->reconcile_exports();
  EXPECT_EQ(repairs.added, 1u);
  EXPECT_EQ(repairs.removed, 1u);
  EXPECT_EQ(gateway->names(), (std::set<std::string>{a.export_name, "operator-export"}));
  repairs = service->reconcile_exports();
  EXPECT_EQ(repairs.added + repairs.removed + repairs.failed, 0u);
}

}  // namespace
}  // namespace volgate::controller
