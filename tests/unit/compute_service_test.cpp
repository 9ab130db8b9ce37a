// Nova's attach and detach over real SQLite, a real file pool and the real volume service, with
// the gateway and libvirt replaced by fakes that record what they hold: after every step, failure
// and crash, the mapping, the attachment, the export and the guest's disk must agree.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "controller/api/api_error.hpp"
#include "controller/compute/compute_service.hpp"
#include "controller/compute/domain_event_worker.hpp"
#include "controller/pools/file_pool.hpp"
#include "controller/store/sqlite_store.hpp"

namespace volgate::controller {
namespace {

namespace fs = std::filesystem;

struct Injected : std::runtime_error {
  Injected() : std::runtime_error("injected failure") {}
};

// A controller killed at that point: not a std::exception, so no flow catches it and none
// reverts; the journal keeps the row of the task that was running, as after a SIGKILL.
struct Die {};

class FakeGateway final : public GatewayExports {
 public:
  void publish(const std::string& name, const gateway::ExportSpec&, bool, const gateway::control::LuksKey*) override {
    if (refuse_publish) throw std::runtime_error("the gateway refuses");
    exports.insert(name);
  }
  bool withdraw(const std::string& name) override { return exports.erase(name) > 0; }
  std::vector<Served> list() override {
    std::vector<Served> out;
    for (const auto& e : exports) out.push_back({e, 0});
    return out;
  }
  int64_t instance() override { return 1; }
  const std::string& nbd_socket() const override { return socket_; }
  std::set<std::string> exports;
  bool refuse_publish = false;

 private:
  std::string socket_ = "/run/test/nbd.sock";
};

// One running server "vm" with a root disk vda; disks attached by serial.
class FakeVirt final : public VirtDriver {
 public:
  std::vector<Server> list_servers() override {
    if (!defined) return {};
    return {{kUuid, "vm", state, true}};
  }
  std::optional<Server> find_server(const std::string& id) override {
    if (defined && (id == kUuid || id == "vm")) return list_servers().front();
    return std::nullopt;
  }
  std::vector<GuestDisk> disks(const std::string&, bool persistent) override {
    std::vector<GuestDisk> out = {{.serial = root_serial, .target = "vda", .bus = "virtio", .boot = true}};
    for (const auto& [serial, target] : attached) out.push_back({.serial = serial, .target = target, .bus = "scsi"});
    if (persistent)
      for (const auto& [serial, target] : definition_only)
        out.push_back({.serial = serial, .target = target, .bus = "scsi"});
    return out;
  }
  void attach_disk(const std::string&, const DiskRequest& d) override {
    if (refuse_attach) throw VirtError("internal error: unable to execute QEMU command 'device_add'");
    attached[d.serial] = d.target;
    last = d;
    if (die_after_attach) throw Die();
  }
  void detach_disk(const std::string&, const std::string& serial) override {
    if (guest_keeps_disks) throw VirtError("the guest keeps the disk");
    attached.erase(serial);
    definition_only.erase(serial);
  }
  void start_server(const std::string&) override {
    state = ServerState::running;
    ++starts;
  }
  bool stop_server(const std::string&, std::chrono::milliseconds graceful) override {
    state = ServerState::shut_off;
    stop_timeouts.push_back(graceful);
    return false;
  }
  void watch_events(DomainEventHandler h) override { handler = std::move(h); }
  // What libvirt does when the domain is undefined: it and its disks are gone.
  void undefine() {
    defined = false;
    attached.clear();
    if (handler) handler({.kind = DomainEvent::Kind::changed, .uuid = kUuid});
  }
  static constexpr const char* kUuid = "6b0f0a0e-0000-4000-8000-00000000000a";
  ServerState state = ServerState::running;
  bool defined = true;
  int starts = 0;
  std::vector<std::chrono::milliseconds> stop_timeouts;
  DomainEventHandler handler;
  std::map<std::string, std::string> attached;         // serial -> target, live and in the definition
  std::map<std::string, std::string> definition_only;  // in the definition, no longer live
  std::string root_serial;  // the serial of the root disk vda (a volume the server boots from)
  DiskRequest last;
  bool refuse_attach = false;
  bool guest_keeps_disks = false;
  bool die_after_attach = false;  // the controller dies right after libvirt attached the disk
};

class ComputeTest : public ::testing::Test {
 public:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("compute-" + std::to_string(::getpid()) + "-" +
                                       std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(dir);
    fs::create_directories(dir);
    config = default_config(dir);
    KeyWrap::create_key_file(dir / "master.key");
    hypervisor = std::make_unique<Hypervisor>("fake:///", [this](const std::string&) {
      return std::unique_ptr<VirtDriver>(new Forward(virt));
    });
    open();
  }
  void TearDown() override {
    compute.reset();
    volumes.reset();
    store.reset();
    fs::remove_all(dir);
  }

  // The Hypervisor owns its driver; this one forwards to the test's FakeVirt.
  struct Forward final : VirtDriver {
    explicit Forward(FakeVirt& v) : v(v) {}
    std::vector<Server> list_servers() override { return v.list_servers(); }
    std::optional<Server> find_server(const std::string& id) override { return v.find_server(id); }
    std::vector<GuestDisk> disks(const std::string& u, bool p) override { return v.disks(u, p); }
    void attach_disk(const std::string& u, const DiskRequest& d) override { v.attach_disk(u, d); }
    void detach_disk(const std::string& u, const std::string& s) override { v.detach_disk(u, s); }
    void start_server(const std::string& u) override { v.start_server(u); }
    bool stop_server(const std::string& u, std::chrono::milliseconds t) override { return v.stop_server(u, t); }
    void watch_events(DomainEventHandler h) override { v.watch_events(std::move(h)); }
    FakeVirt& v;
  };

  void open(BeforeTask before = {}) {
    compute.reset();
    volumes.reset();
    store = std::make_unique<SqliteStore>(dir / "c.db");
    std::vector<std::unique_ptr<Pool>> pools;
    pools.push_back(std::make_unique<FilePool>(config.pools[0]));
    ServiceOptions options{.before_task = before, .run_inline = true};
    volumes = std::make_unique<VolumeService>(config, *store, std::move(pools), KeyWrap::from_file(dir / "master.key"),
                                              options);
    volumes->set_gateway(&gateway);
    compute = std::make_unique<ComputeService>(*store, *volumes, *hypervisor, before,
                                               ComputeOptions{.shutdown_timeout = std::chrono::milliseconds(1500)});
  }

  std::string create_volume() {
    CreateVolumeRequest r{.project = "p", .size_gb = 1};
    return volumes->create_volume(r).id;
  }
  VolumeStatus status(const std::string& id) { return volumes->get_volume("p", id).status; }

  template <class F>
  ApiError::Kind error_of(F&& f) {
    try {
      f();
    } catch (const ApiError& e) {
      return e.kind;
    }
    ADD_FAILURE() << "no ApiError";
    return ApiError::Kind::internal;
  }

  // Nothing of `volume` is left anywhere: available, no mapping, no attachment, no export, no disk.
  void expect_detached(const std::string& volume) {
    EXPECT_EQ(status(volume), VolumeStatus::available);
    EXPECT_FALSE(store->find_mapping(FakeVirt::kUuid, volume));
    EXPECT_TRUE(volumes->attachments_of(volume).empty());
    EXPECT_EQ(gateway.exports.count("volume-" + volume), 0u);
    EXPECT_EQ(virt.attached.count(volume), 0u);
    EXPECT_EQ(virt.definition_only.count(volume), 0u);
  }

  // Everything of an attached `volume` is there: in-use, its mapping attached, one attachment,
  // its export, its disk live and in the definition.
  void expect_attached(const std::string& volume) {
    EXPECT_EQ(status(volume), VolumeStatus::in_use);
    auto m = store->find_mapping(FakeVirt::kUuid, volume);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status, MappingStatus::attached);
    ASSERT_EQ(volumes->attachments_of(volume).size(), 1u);
    EXPECT_EQ(volumes->attachments_of(volume)[0].status, AttachmentStatus::attached);
    EXPECT_EQ(gateway.exports.count("volume-" + volume), 1u);
    EXPECT_EQ(virt.attached.count(volume), 1u);
  }

  // A restarted controller: new services over the same database, the journal replayed.
  void restart() {
    open();
    volumes->recover(ComputeService::flow_kinds());
    compute->recover();
    EXPECT_TRUE(store->journal_unfinished().empty());
    // Every action the killed run recorded is closed: finished, or failed with the reason.
    for (const auto& a : store->actions_of_server(FakeVirt::kUuid))
      for (const auto& e : a.events) EXPECT_FALSE(e.result.empty()) << a.action << " " << e.event << " still running";
  }

  static BeforeTask die_at(std::string flow_kind, std::string task) {
    return [flow_kind, task](const std::string& kind, const std::string& t) {
      if (kind == flow_kind && t == task) throw Die();
    };
  }

  fs::path dir;
  ControllerConfig config;
  FakeGateway gateway;
  FakeVirt virt;
  std::unique_ptr<Hypervisor> hypervisor;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<VolumeService> volumes;
  std::unique_ptr<ComputeService> compute;
};

TEST_F(ComputeTest, AttachAndDetachInNovasOrder) {
  const std::string v = create_volume();
  BlockDeviceMapping m = compute->attach_volume({.project = "p", .server = "vm", .volume_id = v, .tag = "data"});
  EXPECT_EQ(m.device, "/dev/sdb");  // vda is the root's; sdb is the first free scsi name
  EXPECT_EQ(m.status, MappingStatus::attached);
  EXPECT_EQ(m.tag, "data");
  EXPECT_EQ(status(v), VolumeStatus::in_use);
  EXPECT_EQ(virt.attached.at(v), "sdb");
  EXPECT_EQ(virt.last.export_name, "volume-" + v);
  EXPECT_EQ(virt.last.socket, "/run/test/nbd.sock");
  EXPECT_EQ(virt.last.scsi_unit, 1u);
  EXPECT_EQ(gateway.exports.count("volume-" + v), 1u);
  ASSERT_EQ(volumes->attachments_of(v).size(), 1u);
  EXPECT_EQ(volumes->attachments_of(v)[0].status, AttachmentStatus::attached);
  EXPECT_EQ(volumes->attachments_of(v)[0].instance_uuid, FakeVirt::kUuid);

  const std::string w = create_volume();
  EXPECT_EQ(compute->attach_volume({.project = "p", .server = FakeVirt::kUuid, .volume_id = w}).device, "/dev/sdc");
  EXPECT_EQ(compute->volume_attachments("p", "vm").size(), 2u);

  compute->detach_volume("p", "vm", v);
  expect_detached(v);
  EXPECT_EQ(status(w), VolumeStatus::in_use);
}

TEST_F(ComputeTest, RefusalsChangeNothing) {
  const std::string v = create_volume();
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "p", .server = "nope", .volume_id = v}); }),
            ApiError::Kind::not_found);
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "q", .server = "vm", .volume_id = v}); }),
            ApiError::Kind::not_found);
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "p", .server = "vm", .volume_id = v, .device = "/dev/hdb"}); }),
            ApiError::Kind::bad_request);
  EXPECT_EQ(error_of([&] { compute->detach_volume("p", "vm", v); }), ApiError::Kind::not_found);
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v, .device = "/dev/sdd"});
  EXPECT_EQ(virt.attached.at(v), "sdd");
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "p", .server = "vm", .volume_id = v}); }),
            ApiError::Kind::conflict);
  const std::string w = create_volume();
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "p", .server = "vm", .volume_id = w, .device = "sdd"}); }),
            ApiError::Kind::conflict);
  expect_detached(w);
  virt.state = ServerState::other;
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "p", .server = "vm", .volume_id = w}); }),
            ApiError::Kind::conflict);
  expect_detached(w);
}

TEST_F(ComputeTest, LibvirtRefusingTheDiskUndoesEverything) {
  const std::string v = create_volume();
  virt.refuse_attach = true;
  EXPECT_THROW(compute->attach_volume({.project = "p", .server = "vm", .volume_id = v}), VirtError);
  expect_detached(v);
}

TEST_F(ComputeTest, AGuestThatKeepsTheDiskLeavesItAttachedAndInUse) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  virt.guest_keeps_disks = true;
  EXPECT_THROW(compute->detach_volume("p", "vm", v), VirtError);
  EXPECT_EQ(status(v), VolumeStatus::in_use);
  auto m = store->find_mapping(FakeVirt::kUuid, v);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, MappingStatus::attached);
  EXPECT_EQ(gateway.exports.count("volume-" + v), 1u);
  virt.guest_keeps_disks = false;
  compute->detach_volume("p", "vm", v);
  expect_detached(v);
}

TEST_F(ComputeTest, TheBusAskedForChoosesTheDeviceName) {
  const std::string v = create_volume();
  EXPECT_EQ(compute->attach_volume({.project = "p", .server = "vm", .volume_id = v, .bus = "virtio"}).device,
            "/dev/vdb");
  const std::string w = create_volume();
  EXPECT_EQ(error_of([&] {
              compute->attach_volume({.project = "p", .server = "vm", .volume_id = w, .device = "/dev/sdc", .bus = "virtio"});
            }),
            ApiError::Kind::bad_request);
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "p", .server = "vm", .volume_id = w, .bus = "ide"}); }),
            ApiError::Kind::bad_request);
  expect_detached(w);
}

TEST_F(ComputeTest, AVolumeInAnotherZoneIsRefusedAsNovaDoesByDefault) {
  const std::string v = create_volume();
  store->update_volume(v, [](Volume& x) { x.availability_zone = "elsewhere"; });
  EXPECT_EQ(error_of([&] { compute->attach_volume({.project = "p", .server = "vm", .volume_id = v}); }),
            ApiError::Kind::bad_request);
  expect_detached(v);
}

TEST_F(ComputeTest, TheActionLogSaysWhatEachRequestDidAndWhy) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v, .request_id = "req-attach"});
  virt.guest_keeps_disks = true;
  EXPECT_THROW(compute->detach_volume("p", "vm", v, "req-kept"), VirtError);
  virt.guest_keeps_disks = false;
  compute->detach_volume("p", "vm", v, "req-detach");
  // A refusal before anything was done (not attached) is an answer, not an action.
  EXPECT_EQ(error_of([&] { compute->detach_volume("p", "vm", v, "req-refused"); }), ApiError::Kind::not_found);

  const auto actions = compute->actions("vm");
  ASSERT_EQ(actions.size(), 3u);
  EXPECT_EQ(actions[0].request_id, "req-detach");  // newest first
  EXPECT_EQ(actions[2].request_id, "req-attach");
  EXPECT_EQ(actions[2].action, "attach_volume");
  EXPECT_EQ(actions[2].server_id, FakeVirt::kUuid);
  EXPECT_EQ(actions[2].message, "");
  ASSERT_EQ(actions[2].events.size(), 1u);
  EXPECT_EQ(actions[2].events[0].event, "compute_attach_volume");
  EXPECT_EQ(actions[2].events[0].result, kEventSuccess);
  EXPECT_FALSE(actions[2].events[0].finish_time.empty());

  const InstanceAction kept = compute->action(FakeVirt::kUuid, "req-kept");
  EXPECT_EQ(kept.action, "detach_volume");
  EXPECT_EQ(kept.message, kEventError);
  ASSERT_EQ(kept.events.size(), 1u);
  EXPECT_EQ(kept.events[0].result, kEventError);
  EXPECT_NE(kept.events[0].details.find("keeps"), std::string::npos) << kept.events[0].details;
  EXPECT_EQ(error_of([&] { compute->action("vm", "req-refused"); }), ApiError::Kind::not_found);
}

// ------------------------------------------------------------------------------ start and stop

TEST_F(ComputeTest, StartAndStopOnlyFromTheStatesNovaAllows) {
  auto message_of = [](auto&& f) {
    try {
      f();
    } catch (const ApiError& e) {
      EXPECT_EQ(e.kind, ApiError::Kind::conflict);
      return std::string(e.what());
    }
    ADD_FAILURE() << "no ApiError";
    return std::string();
  };
  EXPECT_EQ(message_of([&] { compute->start_server("vm"); }),
            std::string("Cannot 'start' instance ") + FakeVirt::kUuid + " while it is in vm_state active");
  compute->stop_server("vm");
  open();  // waits for the stop running in the background
  ASSERT_EQ(virt.stop_timeouts.size(), 1u);
  EXPECT_EQ(virt.stop_timeouts[0], std::chrono::milliseconds(1500));  // the configured shutdown timeout
  EXPECT_EQ(virt.state, ServerState::shut_off);
  EXPECT_NE(message_of([&] { compute->stop_server("vm"); }).find("while it is in vm_state stopped"),
            std::string::npos);
  compute->start_server(FakeVirt::kUuid);
  EXPECT_EQ(virt.starts, 1);
  EXPECT_EQ(virt.state, ServerState::running);
  EXPECT_EQ(error_of([&] { compute->start_server("nope"); }), ApiError::Kind::not_found);
}

TEST_F(ComputeTest, AVolumeAttachedWhileShutOffIsServedAgainBeforeTheStart) {
  virt.state = ServerState::shut_off;
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  EXPECT_EQ(status(v), VolumeStatus::in_use);
  EXPECT_EQ(gateway.exports.count("volume-" + v), 1u);  // kept while shut off, as Nova keeps its connection
  gateway.exports.clear();  // the gateway restarted and nothing has put it back yet
  compute->start_server("vm");
  EXPECT_EQ(gateway.exports.count("volume-" + v), 1u);
  EXPECT_EQ(virt.starts, 1);
}

TEST_F(ComputeTest, AStartIsRefusedWhileAVolumeCannotBeServed) {
  virt.state = ServerState::shut_off;
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  gateway.exports.clear();
  gateway.refuse_publish = true;
  try {
    compute->start_server("vm");
    ADD_FAILURE() << "started with a volume the gateway does not serve";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind, ApiError::Kind::conflict);
    EXPECT_NE(std::string(e.what()).find(v), std::string::npos) << e.what();
  }
  EXPECT_EQ(virt.starts, 0);
  EXPECT_EQ(virt.state, ServerState::shut_off);
  EXPECT_EQ(status(v), VolumeStatus::in_use);  // nothing lost: the start can be tried again
}

// ------------------------------------------------------------------------------ reconcile

TEST_F(ComputeTest, AnUndefinedServerReleasesAllItsVolumes) {
  const std::string v = create_volume(), w = create_volume(), other = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = w});
  EXPECT_EQ(compute->reconcile_server(FakeVirt::kUuid), 0u);  // everything in place: nothing to do
  EXPECT_EQ(status(v), VolumeStatus::in_use);
  virt.defined = false;
  virt.attached.clear();
  EXPECT_EQ(compute->reconcile_servers(), 2u);
  expect_detached(v);
  expect_detached(w);
  EXPECT_EQ(status(other), VolumeStatus::available);
  EXPECT_TRUE(store->journal_unfinished().empty());
}

TEST_F(ComputeTest, ADiskRemovedByHandReleasesOnlyThatVolume) {
  const std::string v = create_volume(), w = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = w});
  virt.attached.erase(v);  // virsh detach-disk --persistent: out of the live and persistent XML
  EXPECT_EQ(compute->reconcile_server(FakeVirt::kUuid), 1u);
  expect_detached(v);
  EXPECT_EQ(status(w), VolumeStatus::in_use);
  EXPECT_EQ(gateway.exports.count("volume-" + w), 1u);
}

TEST_F(ComputeTest, AFailedReleaseLeavesTheVolumeAttachedForTheNextTry) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  open([](const std::string& kind, const std::string& task) {
    if (kind == "release_volume" && task == "delete_attachment") throw Injected();
  });
  virt.attached.erase(v);
  EXPECT_EQ(compute->reconcile_server(FakeVirt::kUuid), 0u);
  EXPECT_EQ(status(v), VolumeStatus::in_use);
  ASSERT_TRUE(store->find_mapping(FakeVirt::kUuid, v));
  EXPECT_EQ(store->find_mapping(FakeVirt::kUuid, v)->status, MappingStatus::attached);
  open();
  EXPECT_EQ(compute->reconcile_server(FakeVirt::kUuid), 1u);
  expect_detached(v);
}

TEST_F(ComputeTest, AReleaseInterruptedByACrashIsFinishedAtRestart) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  virt.attached.erase(v);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Its own objects: the fixture's belong to the parent.
    SqliteStore child_store(dir / "c.db");
    std::vector<std::unique_ptr<Pool>> pools;
    pools.push_back(std::make_unique<FilePool>(config.pools[0]));
    VolumeService child_volumes(config, child_store, std::move(pools), KeyWrap::from_file(dir / "master.key"),
                                {.run_inline = true});
    child_volumes.set_gateway(&gateway);
    auto die = [](const std::string& kind, const std::string& task) {
      if (kind == "release_volume" && task == "destroy_mapping") ::_exit(0);
    };
    ComputeService child_compute(child_store, child_volumes, *hypervisor, die);
    child_compute.reconcile_server(FakeVirt::kUuid);
    ::_exit(1);
  }
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  open();
  volumes->recover(ComputeService::flow_kinds());
  compute->recover();
  // The child withdrew the export from its copy of the fake gateway; the export check, which
  // the controller runs after a restart, does it here.
  volumes->reconcile_exports();
  expect_detached(v);
  EXPECT_TRUE(store->journal_unfinished().empty());
}

// What the controller logs while it lives, instead of stderr.
class CapturedLog {
 public:
  CapturedLog() : previous_(spdlog::default_logger()) {
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_)));
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;
  std::string text() const { return stream_.str(); }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(ComputeTest, DomainEventsAreReconciledOffTheEventThread) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  CapturedLog log;
  {
    DomainEventWorker worker(*compute, *hypervisor,
                             {.connect_interval = std::chrono::seconds(60),
                              .io_error_interval = std::chrono::seconds(60)});
    worker.start();
    ASSERT_TRUE(worker.wait_idle(std::chrono::seconds(10)));
    ASSERT_TRUE(virt.handler);  // the worker's connection watches the events
    for (int i = 0; i < 100; ++i)
      virt.handler({.kind = DomainEvent::Kind::io_error, .uuid = FakeVirt::kUuid, .alias = "ua-" + v});
    virt.undefine();
    ASSERT_TRUE(worker.wait_idle(std::chrono::seconds(10)));
    expect_detached(v);
    worker.stop();
  }
  const std::string text = log.text();
  size_t io_lines = 0;
  for (size_t at = text.find("I/O error on volume " + v); at != std::string::npos;
       at = text.find("I/O error on volume " + v, at + 1))
    ++io_lines;
  EXPECT_EQ(io_lines, 1u) << text;  // 100 errors, one line within the interval
  EXPECT_NE(text.find("volume " + v + " released, the server is gone"), std::string::npos) << text;
}

// A flood of events is cut at the queue's bound: what was dropped is covered by one look at
// every server, which still releases the volume of a domain that went away.
TEST_F(ComputeTest, AFloodOfDomainEventsIsBoundedAndStillReconciled) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  CapturedLog log;
  {
    DomainEventWorker worker(*compute, *hypervisor, {.connect_interval = std::chrono::seconds(60)});
    // Not started: nothing is handled, so the queue fills.
    for (int i = 0; i < 5000; ++i) worker.post({.kind = DomainEvent::Kind::changed, .uuid = "unknown-" + std::to_string(i)});
    virt.defined = false;  // the domain went away while the events piled up; its event was dropped
    virt.attached.clear();
    worker.start();
    ASSERT_TRUE(worker.wait_idle(std::chrono::seconds(30)));
    expect_detached(v);
    worker.stop();
  }
  const std::string text = log.text();
  EXPECT_NE(text.find("more than 1024 libvirt events waiting"), std::string::npos) << text.substr(0, 2000);
  EXPECT_EQ(text.find("more than 1024", text.find("more than 1024") + 1), std::string::npos)
      << "the overflow is said once";
}

class AttachRevert : public ComputeTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(AttachRevert, EachFailedStepLeavesNothing) {
  const std::string v = create_volume();
  open([task = GetParam()](const std::string& kind, const std::string& t) {
    if (kind == "attach_volume" && t == task) throw Injected();
  });
  EXPECT_THROW(compute->attach_volume({.project = "p", .server = "vm", .volume_id = v, .request_id = "req-1"}),
               Injected);
  expect_detached(v);
  EXPECT_TRUE(store->journal_unfinished().empty());
  // Once the action is recorded, its event says the attach failed.
  if (auto a = store->find_action("req-1")) {
    ASSERT_EQ(a->events.size(), 1u);
    EXPECT_EQ(a->events[0].result, kEventError);
    EXPECT_EQ(a->message, kEventError);
  }
}

INSTANTIATE_TEST_SUITE_P(EachTask, AttachRevert,
                         ::testing::Values("validate", "start_action", "reserve_device", "create_attachment", "connect",
                                           "attach_disk", "complete_attachment", "finish_action"));

TEST_F(ComputeTest, DetachOfTheRootVolumeIs400AndChangesNothing) {
  const std::string root = create_volume();
  virt.root_serial = root;  // the server boots from it (vda, boot order 1)
  EXPECT_EQ(error_of([&] { compute->detach_volume("p", "vm", root); }), ApiError::Kind::bad_request);
  try {
    compute->detach_volume("p", "vm", root);
  } catch (const ApiError& e) {
    EXPECT_STREQ(e.what(), "Cannot detach a root device volume");
  }
  EXPECT_EQ(status(root), VolumeStatus::available);
  // Another volume of the same server detaches as usual.
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  compute->detach_volume("p", "vm", v);
  expect_detached(v);
}

TEST_F(ComputeTest, ADetachInAStateOutsideRunningPausedShutOffIs409) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  virt.state = ServerState::other;  // crashed, pmsuspended: what TCG here cannot produce on demand
  EXPECT_EQ(error_of([&] { compute->detach_volume("p", "vm", v); }), ApiError::Kind::conflict);
  expect_attached(v);
  virt.state = ServerState::running;
  compute->detach_volume("p", "vm", v);
  expect_detached(v);
}

TEST_F(ComputeTest, ADeviceNameADiskOfTheDomainHasIs409) {
  const std::string outside = "not-a-volume";
  virt.attached[outside] = "sdc";  // plugged in without volgate: no mapping
  const std::string v = create_volume();
  EXPECT_EQ(error_of([&] {
              compute->attach_volume({.project = "p", .server = "vm", .volume_id = v, .device = "/dev/sdc"});
            }),
            ApiError::Kind::conflict);
  expect_detached(v);
  EXPECT_EQ(compute->attach_volume({.project = "p", .server = "vm", .volume_id = v}).device, "/dev/sdb");
}

// SIGKILL at each step (Die), then a restart: the volume is attached whole or not at all.
class AttachCrash : public ComputeTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(AttachCrash, ARestartLeavesTheVolumeAttachedWholeOrNotAtAll) {
  const std::string v = create_volume();
  open(die_at("attach_volume", GetParam()));
  EXPECT_THROW(compute->attach_volume({.project = "p", .server = "vm", .volume_id = v}), Die);
  restart();
  if (status(v) == VolumeStatus::in_use) {
    expect_attached(v);
    compute->detach_volume("p", "vm", v);
  }
  expect_detached(v);
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  expect_attached(v);
}

INSTANTIATE_TEST_SUITE_P(EachTask, AttachCrash,
                         ::testing::Values("validate", "start_action", "reserve_device", "create_attachment", "connect", "attach_disk",
                                           "complete_attachment", "finish_action", kAfterLastTask));

// Inside the steps: after the volume service made the attachment and before the compute
// journal has its id; after libvirt attached the disk and before the journal says so.
TEST_F(ComputeTest, AKillInsideCreateAttachmentLeavesNoAttachment) {
  const std::string v = create_volume();
  open(die_at("create_attachment", kAfterLastTask));
  EXPECT_THROW(compute->attach_volume({.project = "p", .server = "vm", .volume_id = v}), Die);
  restart();
  expect_detached(v);
}

TEST_F(ComputeTest, AKillRightAfterLibvirtAttachedLeavesNoDisk) {
  const std::string v = create_volume();
  virt.die_after_attach = true;
  EXPECT_THROW(compute->attach_volume({.project = "p", .server = "vm", .volume_id = v}), Die);
  virt.die_after_attach = false;
  EXPECT_EQ(virt.attached.count(v), 1u);
  restart();
  expect_detached(v);
}

class DetachCrash : public ComputeTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DetachCrash, ARestartLeavesTheVolumeAttachedWholeOrNotAtAll) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  open(die_at("detach_volume", GetParam()));
  EXPECT_THROW(compute->detach_volume("p", "vm", v), Die);
  restart();
  if (status(v) == VolumeStatus::in_use) {
    expect_attached(v);
    compute->detach_volume("p", "vm", v);
  }
  expect_detached(v);
}

INSTANTIATE_TEST_SUITE_P(EachTask, DetachCrash,
                         ::testing::Values("validate", "start_action", "begin_detaching", "detach_disk", "delete_attachment",
                                           "destroy_mapping", "finish_action", kAfterLastTask));

// Killed between libvirt's live detach and the definition's: the guest no longer has the disk,
// so the restart finishes the detach (and takes the disk out of the definition too).
TEST_F(ComputeTest, AKillBetweenTheLiveAndTheDefinitionDetachFinishesIt) {
  const std::string v = create_volume();
  compute->attach_volume({.project = "p", .server = "vm", .volume_id = v});
  open(die_at("detach_volume", "detach_disk"));
  EXPECT_THROW(compute->detach_volume("p", "vm", v), Die);
  virt.definition_only[v] = virt.attached.at(v);
  virt.attached.erase(v);
  restart();
  expect_detached(v);
}

}  // namespace
}  // namespace volgate::controller
