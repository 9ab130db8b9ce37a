#include "gateway/export_spec.hpp"

#include <gtest/gtest.h>

#include <string>

#include "gateway/backend_spec.hpp"

using namespace volgate::gateway;

TEST(ExportSpec, File) {
  auto s = parse_export_spec("disk=file:/srv/a.img,readonly,direct");
  EXPECT_EQ(s.name, "disk");
  EXPECT_EQ(s.backend, ExportSpec::Backend::file);
  EXPECT_EQ(s.path, "/srv/a.img");
  EXPECT_TRUE(s.read_only);
  EXPECT_TRUE(s.direct);
  EXPECT_FALSE(s.file_size);
  auto sized = parse_export_spec("d2=file:/tmp/x,size=10G");
  EXPECT_EQ(sized.file_size, 10ull << 30);
}

TEST(ExportSpec, Memory) {
  auto s = parse_export_spec("m=memory:512M");
  EXPECT_EQ(s.backend, ExportSpec::Backend::memory);
  EXPECT_EQ(s.memory_size, 512ull << 20);
  EXPECT_FALSE(s.read_only);
}

TEST(ExportSpec, ErrorsQuoteTheProblem) {
  auto message = [](const char* text) {
    try {
      parse_export_spec(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("nodelimiter").find("NAME=BACKEND"), std::string::npos);
  EXPECT_NE(message("=memory:1G").find("export name"), std::string::npos);
  EXPECT_NE(message("a b=memory:1G").find("export name"), std::string::npos);
  EXPECT_NE(message("x=memory:12Q").find("'12Q'"), std::string::npos);
  EXPECT_NE(message("x=memory:0").find("'0'"), std::string::npos);
  EXPECT_NE(message("x=nbd:foo").find("unknown backend"), std::string::npos);
  EXPECT_NE(message("x=file:").find("needs a path"), std::string::npos);
  EXPECT_NE(message("x=file:/a,bogus").find("'bogus'"), std::string::npos);
  EXPECT_NE(message("x=memory:1G,direct").find("'direct'"), std::string::npos);
  EXPECT_NE(message("x=memory:1G,size=1G").find("'size=1G'"), std::string::npos);
  EXPECT_NE(message("x=file:/a,size=abc").find("'abc'"), std::string::npos);
  EXPECT_NE(message("x=file:/a,readonly=yes").find("'readonly=yes'"), std::string::npos);
  EXPECT_NE(message("x=file:/a,readonly,size=1G").find("readonly"), std::string::npos);
}

TEST(ExportSpec, Rbd) {
  auto s = parse_export_spec("vol=rbd:volumes/vm-1-disk");
  EXPECT_EQ(s.backend, ExportSpec::Backend::rbd);
  EXPECT_EQ(s.rbd.pool, "volumes");
  EXPECT_EQ(s.rbd.image, "vm-1-disk");
  EXPECT_FALSE(s.rbd.snapshot);
  EXPECT_FALSE(s.rbd.ceph_conf);
  EXPECT_EQ(s.rbd.ceph_id, "admin");
  EXPECT_FALSE(s.rbd.keyring);
  EXPECT_FALSE(s.read_only);

  auto full = parse_export_spec(
      "v=rbd:p/img,ceph-conf=/etc/ceph/c.conf,ceph-id=cinder,keyring=/k/ring,readonly,luks-key-file=/k/pass");
  EXPECT_EQ(full.rbd.ceph_conf, "/etc/ceph/c.conf");
  EXPECT_EQ(full.rbd.ceph_id, "cinder");
  EXPECT_EQ(full.rbd.keyring, "/k/ring");
  EXPECT_TRUE(full.read_only);
  EXPECT_EQ(full.luks_key_file, "/k/pass");
}

TEST(ExportSpec, RbdNamespace) {
  auto s = parse_export_spec("v=rbd:p/tenant-a/img@snap");
  EXPECT_EQ(s.rbd.pool, "p");
  EXPECT_EQ(s.rbd.rados_namespace, "tenant-a");
  EXPECT_EQ(s.rbd.image, "img");
  EXPECT_EQ(s.rbd.snapshot, "snap");
  // a '/' in the snapshot name is the snapshot's, not a namespace separator
  auto t = parse_export_spec("v=rbd:p/img@a/b");
  EXPECT_FALSE(t.rbd.rados_namespace);
  EXPECT_EQ(t.rbd.image, "img");
  EXPECT_EQ(t.rbd.snapshot, "a/b");
}

TEST(ExportSpec, RbdSnapshotIsReadOnly) {
  auto s = parse_export_spec("s=rbd:p/img@before-upgrade");
  EXPECT_EQ(s.rbd.image, "img");
  EXPECT_EQ(s.rbd.snapshot, "before-upgrade");
  EXPECT_TRUE(s.read_only);
}

TEST(ExportSpec, RbdTarget) {
  auto t = parse_target_spec("rbd:p/img,ceph-id=admin");
  EXPECT_EQ(t.backend, ExportSpec::Backend::rbd);
  EXPECT_EQ(t.rbd.pool, "p");
  EXPECT_THROW(parse_target_spec("rbd:p/img,luks-key-file=/k"), std::invalid_argument);
}

// The nbdkit plugin's SPEC: the backend part of --export, LUKS included, errors labelled SPEC.
TEST(ExportSpec, BackendSpec) {
  auto s = parse_backend_spec("file:/srv/v.img,readonly,luks-key-file=/etc/v.key", "SPEC");
  EXPECT_EQ(s.backend, ExportSpec::Backend::file);
  EXPECT_EQ(s.path, "/srv/v.img");
  EXPECT_TRUE(s.read_only);
  EXPECT_EQ(s.luks_key_file, "/etc/v.key");
  auto i = parse_backend_spec("iscsi://a:1,b:2/iqn.2026-01.x:y/7,path-policy=round-robin", "SPEC");
  EXPECT_EQ(i.iscsi.portals.size(), 2u);
  try {
    parse_backend_spec("nosuch:x", "SPEC");
    FAIL() << "an unknown backend was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).rfind("SPEC 'nosuch:x': unknown backend", 0), 0u) << e.what();
  }
  // NAME= belongs to --export only.
  EXPECT_THROW(parse_backend_spec("disk=file:/srv/v.img", "SPEC"), std::invalid_argument);
  EXPECT_EQ(std::string(kExportSyntaxHelp).substr(std::string("NAME=").size()), kBackendSyntaxHelp);
}

TEST(ExportSpec, RbdErrors) {
  auto message = [](const char* text) {
    try {
      parse_export_spec(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("x=rbd:").find("POOL/IMAGE"), std::string::npos);
  EXPECT_NE(message("x=rbd:noslash").find("POOL/IMAGE"), std::string::npos);
  EXPECT_NE(message("x=rbd:/img").find("pool name is empty"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/").find("image name is empty"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/@s").find("image name is empty"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img@").find("snapshot name"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img@a@b").find("snapshot name"), std::string::npos);
  EXPECT_NE(message("x=rbd:p//img").find("namespace name is empty"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/ns/a/img").find("POOL/[NAMESPACE/]IMAGE"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img,direct").find("'direct' for the rbd backend"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img,size=1G").find("'size=1G'"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img,ceph-conf=").find("ceph-conf needs a path"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img,keyring=").find("keyring needs a path"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img,ceph-id=client.admin").find("without 'client.'"), std::string::npos);
  EXPECT_NE(message("x=rbd:p/img,ceph-id=").find("ceph-id"), std::string::npos);
  EXPECT_NE(message("x=file:/a,ceph-id=admin").find("'ceph-id=admin'"), std::string::npos);
  EXPECT_NE(message("x=memory:1G,keyring=/k").find("'keyring=/k'"), std::string::npos);
}

TEST(ExportSpec, IscsiPortalsTargetLunAndOptions) {
  auto s = parse_export_spec(
      "vol=iscsi://10.0.0.1,10.0.0.2:3261,[fd00::1]:3262/iqn.2026-01.com.example:vol1/3,"
      "chap-user=alice,chap-secret-file=/etc/secret,path-policy=round-robin,no-path-timeout=5,"
      "path-check-interval=2,initiator-name=iqn.2026-01.com.example:host,readonly,"
      "luks-key-file=/k,reservations=off,io-timeout=2,login-timeout=7");
  EXPECT_EQ(s.backend, ExportSpec::Backend::iscsi);
  ASSERT_EQ(s.iscsi.portals.size(), 3u);
  EXPECT_EQ(s.iscsi.portals[0], "10.0.0.1:3260");
  EXPECT_EQ(s.iscsi.portals[1], "10.0.0.2:3261");
  EXPECT_EQ(s.iscsi.portals[2], "[fd00::1]:3262");
  EXPECT_EQ(s.iscsi.target, "iqn.2026-01.com.example:vol1");
  EXPECT_EQ(s.iscsi.lun, 3);
  EXPECT_EQ(s.iscsi.chap_user, "alice");
  EXPECT_EQ(s.iscsi.chap_secret_file, "/etc/secret");
  EXPECT_EQ(s.iscsi.path_policy, volgate::backends::PathPolicy::round_robin);
  EXPECT_EQ(s.iscsi.no_path_timeout, std::chrono::seconds(5));
  EXPECT_EQ(s.iscsi.path_check_interval, std::chrono::seconds(2));
  EXPECT_EQ(s.iscsi.io_timeout, std::chrono::seconds(2));
  EXPECT_EQ(s.iscsi.login_timeout, std::chrono::seconds(7));
  EXPECT_EQ(s.iscsi.initiator_name, "iqn.2026-01.com.example:host");
  EXPECT_TRUE(s.read_only);
  EXPECT_TRUE(s.iscsi.read_only);
  EXPECT_FALSE(s.iscsi.reservations);
  EXPECT_EQ(s.luks_key_file, "/k");
}

TEST(ExportSpec, IscsiDefaults) {
  auto s = parse_export_spec("v=iscsi://host/iqn.2026-01.x:y/0");
  ASSERT_EQ(s.iscsi.portals.size(), 1u);
  EXPECT_EQ(s.iscsi.portals[0], "host:3260");
  EXPECT_EQ(s.iscsi.lun, 0);
  EXPECT_EQ(s.iscsi.path_policy, volgate::backends::PathPolicy::failover);
  EXPECT_EQ(s.iscsi.no_path_timeout, std::chrono::seconds(30));
  EXPECT_TRUE(s.iscsi.chap_user.empty());
  EXPECT_TRUE(s.iscsi.reservations);
  EXPECT_FALSE(s.read_only);
  // The same syntax names a `volgate luks` TARGET.
  auto t = parse_target_spec("iscsi://a:1,b:2/iqn.2026-01.x:y/7");
  EXPECT_EQ(t.backend, ExportSpec::Backend::iscsi);
  EXPECT_EQ(t.iscsi.portals.size(), 2u);
  EXPECT_EQ(t.iscsi.lun, 7);
}

TEST(ExportSpec, IscsiErrorsQuoteTheProblem) {
  auto message = [](const char* text) {
    try {
      parse_export_spec(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const std::string target = "/iqn.2026-01.x:y/1";
  EXPECT_NE(message("v=iscsi://").find("iscsi://PORTAL"), std::string::npos);
  EXPECT_NE(message("v=iscsi://host").find("iscsi://PORTAL"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://" + target).c_str()).find("no portal"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://a,,b" + target).c_str()).find("empty portal"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://a:0" + target).c_str()).find("'a:0'"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://a:99999" + target).c_str()).find("1-65535"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://a:x" + target).c_str()).find("'a:x'"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://[::1" + target).c_str()).find("']'"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://a,a:3260" + target).c_str()).find("twice"), std::string::npos);
  EXPECT_NE(message("v=iscsi://a/iqn.2026-01.x:y").find("LUN"), std::string::npos);
  EXPECT_NE(message("v=iscsi://a/iqn.2026-01.x:y/").find("LUN ''"), std::string::npos);
  EXPECT_NE(message("v=iscsi://a/iqn.2026-01.x:y/-1").find("LUN '-1'"), std::string::npos);
  EXPECT_NE(message("v=iscsi://a/iqn.2026-01.x:y/99999").find("LUN '99999'"), std::string::npos);
  EXPECT_NE(message("v=iscsi://a//1").find("empty target"), std::string::npos);
  EXPECT_NE(message("v=iscsi://a/vol1/1").find("not an iSCSI name"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",path-policy=random").c_str()).find("'random'"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",no-path-timeout=-1").c_str()).find("'-1'"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",path-check-interval=0").c_str()).find("'0'"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",io-timeout=0").c_str()).find("io-timeout '0'"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",login-timeout=1.5").c_str()).find("'1.5'"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",chap-user=u").c_str()).find("chap-secret-file"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",mutual-chap-user=t,mutual-chap-secret-file=/f")
                        .c_str())
                .find("mutual CHAP needs chap-user"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",size=1G").c_str()).find("'size=1G' for the iscsi"),
            std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",direct").c_str()).find("'direct'"), std::string::npos);
  EXPECT_NE(message(("v=iscsi://a" + target + ",chap-user=").c_str()).find("needs a value"),
            std::string::npos);
  // Every message starts with the whole argument, so the user sees what was parsed.
  EXPECT_EQ(message("v=iscsi://a/vol1/1").rfind("--export 'v=iscsi://a/vol1/1': ", 0), 0u);
}

// format_backend writes what parse_target_spec reads back, for every backend.
TEST(ExportSpec, FormattedBackendsParseBackToTheSameSpec) {
  for (const char* text :
       {"file:/srv/pool/volume-1.img", "file:/a b/c,direct", "file:/x,readonly", "memory:1048576",
        "rbd:vols/volume-1,ceph-conf=/etc/ceph/ceph.conf", "rbd:vols/ns/img@snap,ceph-id=cinder,keyring=/k",
        "iscsi://127.0.0.1:3260,127.0.0.2:3260/iqn.2026-01.x:vol/1",
        "iscsi://h/iqn.2026-01.x:vol/2,initiator-name=iqn.2026-01.y:gw,chap-user=u,chap-secret-file=/s,readonly"}) {
    ExportSpec spec = parse_target_spec(text);
    const std::string formatted = format_backend(spec);
    ExportSpec again = parse_target_spec(formatted);
    EXPECT_EQ(format_backend(again), formatted) << text;
    EXPECT_EQ(again.read_only, spec.read_only) << text;
    EXPECT_EQ(again.path, spec.path) << text;
    EXPECT_EQ(again.rbd.image, spec.rbd.image) << text;
    EXPECT_EQ(again.rbd.snapshot, spec.rbd.snapshot) << text;
    EXPECT_EQ(again.iscsi.portals, spec.iscsi.portals) << text;
    EXPECT_EQ(again.iscsi.chap_secret_file, spec.iscsi.chap_secret_file) << text;
  }
  EXPECT_EQ(format_backend(parse_target_spec("file:/srv/v.img")), "file:/srv/v.img");
}
