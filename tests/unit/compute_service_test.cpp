// Nova's attach and detach over real SQLite, a real file pool and the real volume service, with
// the gateway and libvirt replaced by fakes that record what they hold: after every step, failure
// and crash, the mapping, the attachment, the export and the guest's disk must agree.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "controller/api/api_error.hpp"
#include "controller/compute/compute_service.hpp"
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

 private:
  std::string socket_ = "/run/test/nbd.sock";
};

// One running server "vm" with a root disk vda; disks attached by serial.
class FakeVirt final : public VirtDriver {
 public:
  std::vector<Server> list_servers() override { return {{kUuid, "vm", state, true}}; }
  std::optional<Server> find_server(const std::string& id) override {
    if (id == kUuid || id == "vm") return list_servers().front();
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
  static constexpr const char* kUuid = "6b0f0a0e-0000-4000-8000-00000000000a";
  ServerState state = ServerState::running;
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
    compute = std::make_unique<ComputeService>(*store, *volumes, *hypervisor, before);
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
