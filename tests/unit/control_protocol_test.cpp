// The control API's JSON, both ways: every target form survives a round trip, and each bad
// field is refused with a message that names it.
#include "gateway/control_protocol.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace volgate::gateway::control {
namespace {

Json parse(const char* text) { return Json::parse(text); }

// The message of the ProtocolError that `f` throws, or a failure.
template <class F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const ProtocolError& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted";
  return {};
}

std::string target_refusal(const char* text) {
  return refusal([&] { target_from_json(parse(text)); });
}

std::string put_refusal(const char* text) {
  return refusal([&] { put_request_from_json(parse(text)); });
}

void expect_round_trip(const char* text) {
  Json original = parse(text);
  ExportSpec spec = target_from_json(original);
  Json again = target_to_json(spec);
  EXPECT_EQ(target_to_json(target_from_json(again)), again) << text;
  // Every key given comes back with the value given.
  for (auto it = original.begin(); it != original.end(); ++it)
    EXPECT_EQ(again.at(it.key()), it.value()) << text << " key " << it.key();
}

TEST(ControlProtocol, TargetsRoundTrip) {
  expect_round_trip(R"({"backend": "file", "path": "/var/lib/volgate/v1.img"})");
  expect_round_trip(R"({"backend": "file", "path": "/dev/sdb", "direct": true})");
  expect_round_trip(R"({"backend": "memory", "size": 1073741824})");
  expect_round_trip(R"({"backend": "rbd", "pool": "volumes", "image": "v1"})");
  expect_round_trip(R"({"backend": "rbd", "pool": "volumes", "namespace": "tenant", "image": "v1",
                        "snapshot": "s1", "ceph_conf": "/etc/ceph/c.conf", "ceph_id": "cinder",
                        "keyring": "/etc/ceph/k"})");
  expect_round_trip(R"({"backend": "iscsi", "portals": ["10.0.0.1:3260", "[::1]:3261"],
                        "iqn": "iqn.2026-01.org.example:vol1", "lun": 3,
                        "initiator_name": "iqn.2026-01.org.example:host", "chap_user": "u",
                        "chap_secret_file": "/etc/volgate/chap", "mutual_chap_user": "t",
                        "mutual_chap_secret_file": "/etc/volgate/mchap", "path_policy": "round-robin",
                        "no_path_timeout": 60, "path_check_interval": 2, "io_timeout": 4,
                        "login_timeout": 7, "reservations": false})");
}

TEST(ControlProtocol, TargetFieldsReachTheSpec) {
  ExportSpec file = target_from_json(parse(R"({"backend": "file", "path": "/a/b"})"));
  EXPECT_EQ(file.backend, ExportSpec::Backend::file);
  EXPECT_EQ(file.path, "/a/b");
  ExportSpec rbd = target_from_json(parse(R"({"backend": "rbd", "pool": "p", "namespace": "n", "image": "i", "snapshot": "s"})"));
  EXPECT_EQ(rbd.rbd.pool, "p");
  EXPECT_EQ(rbd.rbd.rados_namespace, "n");
  EXPECT_EQ(rbd.rbd.image, "i");
  EXPECT_EQ(rbd.rbd.snapshot, "s");
  ExportSpec iscsi = target_from_json(parse(R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "io_timeout": 9})"));
  ASSERT_EQ(iscsi.iscsi.portals.size(), 1u);
  EXPECT_EQ(iscsi.iscsi.portals[0], "h:3260");  // the default port, as on the command line
  EXPECT_EQ(iscsi.iscsi.io_timeout, std::chrono::seconds(9));
}

TEST(ControlProtocol, EachBadTargetFieldIsNamed) {
  struct Case {
    const char* json;
    const char* expected;  // a part of the message
  };
  const Case cases[] = {
      {R"([])", "target must be an object"},
      {R"({})", "target.backend is missing"},
      {R"({"backend": 1})", "target.backend must be a string"},
      {R"({"backend": "nfs"})", "target.backend 'nfs' is not one of"},
      {R"({"backend": "file"})", "target.path is missing"},
      {R"({"backend": "file", "path": "rel/path"})", "target.path must be an absolute path"},
      {R"({"backend": "file", "path": ""})", "target.path must not be empty"},
      {R"({"backend": "file", "path": 5})", "target.path must be a string"},
      {R"({"backend": "file", "path": "/a", "direct": "yes"})", "target.direct must be true or false"},
      {R"({"backend": "file", "path": "/a", "size": 5})", "unknown key 'size' in target"},
      {R"({"backend": "file", "path": "/a", "pool": "x"})", "unknown key 'pool' in target"},
      {R"({"backend": "memory"})", "target.size is missing"},
      {R"({"backend": "memory", "size": -1})", "target.size must be a non-negative integer"},
      {R"({"backend": "memory", "size": 1.5})", "target.size must be a non-negative integer"},
      {R"({"backend": "memory", "size": "1G"})", "target.size must be a non-negative integer"},
      {R"({"backend": "memory", "size": 0})", "target.size must be more than 0"},
      {R"({"backend": "rbd", "image": "i"})", "target.pool is missing"},
      {R"({"backend": "rbd", "pool": "p"})", "target.image is missing"},
      {R"({"backend": "rbd", "pool": "p/q", "image": "i"})", "target.pool must not contain '/'"},
      {R"({"backend": "rbd", "pool": "p", "image": "i@s"})", "target.image must not contain"},
      {R"({"backend": "rbd", "pool": "p", "image": "i", "namespace": ""})", "target.namespace must not be empty"},
      {R"({"backend": "rbd", "pool": "p", "image": "i", "ceph_id": "client.admin"})", "target.ceph_id is the client name"},
      {R"({"backend": "rbd", "pool": "p", "image": "i", "keyring": "k"})", "target.keyring must be an absolute path"},
      {R"({"backend": "rbd", "pool": "p", "image": "i", "ceph_conf": "c"})", "target.ceph_conf must be an absolute path"},
      {R"({"backend": "rbd", "pool": "p", "image": "i", "snap": "s"})", "unknown key 'snap' in target"},
      {R"({"backend": "iscsi", "iqn": "iqn.x:y", "lun": 0})", "target.portals is missing"},
      {R"({"backend": "iscsi", "portals": [], "iqn": "iqn.x:y", "lun": 0})", "target.portals must be a non-empty array"},
      {R"({"backend": "iscsi", "portals": "h:1", "iqn": "iqn.x:y", "lun": 0})", "target.portals must be a non-empty array"},
      {R"({"backend": "iscsi", "portals": [1], "iqn": "iqn.x:y", "lun": 0})", "target.portals[0] must be"},
      {R"({"backend": "iscsi", "portals": ["a,b"], "iqn": "iqn.x:y", "lun": 0})", "target.portals[0] must not contain"},
      {R"({"backend": "iscsi", "portals": ["h:99999"], "iqn": "iqn.x:y", "lun": 0})", "port must be a number"},
      {R"({"backend": "iscsi", "portals": ["h", "h:3260"], "iqn": "iqn.x:y", "lun": 0})", "given twice"},
      {R"({"backend": "iscsi", "portals": ["h"], "lun": 0})", "target.iqn is missing"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "vol1", "lun": 0})", "is not an iSCSI name"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y"})", "target.lun is missing"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 99999})", "LUN '99999'"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "path_policy": "random"})", "target.path_policy"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "io_timeout": 0})", "target.io_timeout"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "io_timeout": "3"})", "target.io_timeout must be a non-negative integer"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "reservations": "on"})", "target.reservations must be true or false"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "chap_user": "u"})", "chap-user and chap-secret-file go together"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "chap_user": "u", "chap_secret_file": "s"})", "target.chap_secret_file must be an absolute path"},
      {R"({"backend": "iscsi", "portals": ["h"], "iqn": "iqn.x:y", "lun": 0, "chap": "u"})", "unknown key 'chap' in target"},
  };
  for (const auto& c : cases) {
    std::string message = target_refusal(c.json);
    EXPECT_NE(message.find(c.expected), std::string::npos) << c.json << "\n  got: " << message;
  }
}

TEST(ControlProtocol, PutRequestWithAVolumeKey) {
  Json body = parse(R"({"target": {"backend": "memory", "size": 4096}, "read_only": true,
                        "luks": {"volume_key": "AAECAwQFBgc="}})");
  PutExportRequest r = put_request_from_json(body);
  EXPECT_TRUE(r.read_only);
  EXPECT_TRUE(r.target.read_only);
  ASSERT_TRUE(r.luks);
  EXPECT_EQ(r.luks->kind, LuksKey::Kind::volume_key);
  ASSERT_EQ(r.luks->bytes.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(std::to_integer<int>(r.luks->bytes.data()[i]), static_cast<int>(i));

  // And back: what the client sends parses to the same request.
  Json sent = put_request_to_json(r.target, r.read_only, &*r.luks);
  EXPECT_EQ(sent["luks"]["volume_key"], "AAECAwQFBgc=");
  PutExportRequest again = put_request_from_json(sent);
  EXPECT_EQ(target_to_json(again.target), target_to_json(r.target));
  ASSERT_TRUE(again.luks);
  EXPECT_EQ(std::memcmp(again.luks->bytes.data(), r.luks->bytes.data(), 8), 0);

  PutExportRequest plain = put_request_from_json(parse(R"({"target": {"backend": "memory", "size": 4096}})"));
  EXPECT_FALSE(plain.read_only);
  EXPECT_FALSE(plain.luks);
  auto pass = put_request_from_json(parse(R"({"target": {"backend": "memory", "size": 1}, "luks": {"passphrase": "cHc="}})"));
  ASSERT_TRUE(pass.luks);
  EXPECT_EQ(pass.luks->kind, LuksKey::Kind::passphrase);
  EXPECT_EQ(std::string(pass.luks->bytes.chars(), pass.luks->bytes.size()), "pw");
}

TEST(ControlProtocol, EachBadPutFieldIsNamedAndNoKeyIsQuoted) {
  struct Case {
    const char* json;
    const char* expected;
  };
  const Case cases[] = {
      {R"("x")", "body must be an object"},
      {R"({})", "target is missing"},
      {R"({"target": {"backend": "memory", "size": 1}, "read_only": 1})", "body.read_only must be true or false"},
      {R"({"target": {"backend": "memory", "size": 1}, "readonly": true})", "unknown key 'readonly' in body"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": "x"})", "luks must be an object"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {}})", "exactly one of volume_key and passphrase"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"volume_key": "QUJD", "passphrase": "QUJD"}})", "exactly one"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"key": "QUJD"}})", "unknown key 'key' in luks"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"volume_key": 5}})", "luks.volume_key must be a base64 string"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"volume_key": "c2VjcmV0a2V5"}, "x": 1})", "unknown key 'x' in body"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"volume_key": "c2VjcmV0a2V5!"}})", "luks.volume_key is not base64"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"volume_key": "c2Vj*mV0a2V5"}})", "luks.volume_key is not base64"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"volume_key": "c2=jcmV0a2V5"}})", "luks.volume_key is not base64"},
      {R"({"target": {"backend": "memory", "size": 1}, "luks": {"volume_key": ""}})", "luks.volume_key is empty"},
      {R"({"target": {"backend": "rbd", "pool": "p", "image": "i", "snapshot": "s"}})", "read_only must be true for an RBD snapshot"},
  };
  for (const auto& c : cases) {
    std::string message = put_refusal(c.json);
    EXPECT_NE(message.find(c.expected), std::string::npos) << c.json << "\n  got: " << message;
    EXPECT_EQ(message.find("c2VjcmV0a2V5"), std::string::npos) << message;
    EXPECT_EQ(message.find("secretkey"), std::string::npos) << message;
  }
}

TEST(ControlProtocol, Base64BothWays) {
  const char* samples[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char* encoded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (size_t i = 0; i < std::size(samples); ++i) {
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(samples[i]), std::strlen(samples[i]));
    WipingString text = encode_base64(bytes);
    EXPECT_EQ(std::string(text.data(), text.size()), encoded[i]);
    auto decoded = decode_base64_secret(encoded[i], "f");
    EXPECT_EQ(std::string(decoded.chars(), decoded.size()), samples[i]);
  }
  EXPECT_THROW(decode_base64_secret("Zg=", "f"), ProtocolError);
  EXPECT_THROW(decode_base64_secret("Z===", "f"), ProtocolError);
  EXPECT_THROW(decode_base64_secret("Zm9v\n", "f"), ProtocolError);
}

TEST(ControlProtocol, ExportAndHealthRoundTrip) {
  ExportInfo info;
  info.name = "vol-1";
  info.target = target_from_json(parse(R"({"backend": "file", "path": "/x"})"));
  info.read_only = true;
  info.encrypted = true;
  info.size = 1 << 30;
  info.connections = 2;
  info.requests = {1, 2, 3, 4, 5};
  Json j = export_to_json(info);
  EXPECT_EQ(j["requests"]["bytes_written"], 4);
  ExportInfo back = export_from_json(j);
  EXPECT_EQ(back.name, "vol-1");
  EXPECT_EQ(back.target.path, "/x");
  EXPECT_TRUE(back.read_only);
  EXPECT_TRUE(back.encrypted);
  EXPECT_EQ(back.size, 1u << 30);
  EXPECT_EQ(back.connections, 2u);
  EXPECT_EQ(back.requests.errors, 5u);
  j["requests"]["read"] = "many";
  EXPECT_NE(refusal([&] { export_from_json(j); }).find("export.requests.read"), std::string::npos);

  Health h = health_from_json(health_to_json({"ok", 3, 4, 42}));
  EXPECT_EQ(h.status, "ok");
  EXPECT_EQ(h.exports, 3u);
  EXPECT_EQ(h.connections, 4u);
  EXPECT_EQ(h.pid, 42);

  Json e = error_to_json(409, "busy");
  EXPECT_EQ(e["error"]["code"], 409);
  EXPECT_EQ(error_message_from_json(e), "busy");
  EXPECT_EQ(error_message_from_json(parse(R"({"x": 1})")), std::nullopt);
}

TEST(ControlProtocol, ExportNames) {
  EXPECT_TRUE(valid_export_name("vol-1_a.b:c"));
  EXPECT_FALSE(valid_export_name(""));
  EXPECT_FALSE(valid_export_name("a/b"));
  EXPECT_FALSE(valid_export_name("a b"));
  EXPECT_FALSE(valid_export_name(std::string(256, 'a')));
}

}  // namespace
}  // namespace volgate::gateway::control
