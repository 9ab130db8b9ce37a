#include "gateway/export_spec.hpp"

#include <gtest/gtest.h>

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
