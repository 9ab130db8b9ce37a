#include "gateway/nbd_spec.hpp"

#include <gtest/gtest.h>

#include "gateway/export_spec.hpp"

using namespace volgate::gateway;

namespace {

std::string error_of(const char* spec) {
  try {
    parse_export_spec(spec);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST(NbdSpec, UnixSocketUri) {
  auto o = parse_nbd_uri("nbd+unix:///disk%201?socket=/run/up%2Cstream.sock");
  EXPECT_EQ(o.uri, "nbd+unix:///disk%201?socket=/run/up%2Cstream.sock");  // libnbd gets it as given
  EXPECT_EQ(o.export_name, "disk 1");
  EXPECT_EQ(o.socket, "/run/up,stream.sock");
  EXPECT_TRUE(o.host.empty());
}

TEST(NbdSpec, DefaultExportOverUnixSocket) {
  EXPECT_EQ(parse_nbd_uri("nbd+unix://?socket=/s").export_name, "");
  EXPECT_EQ(parse_nbd_uri("nbd+unix:///?socket=/s").export_name, "");
}

TEST(NbdSpec, TcpUri) {
  auto o = parse_nbd_uri("nbd://storage.example:10810/vol");
  EXPECT_EQ(o.host, "storage.example");
  EXPECT_EQ(o.port, 10810u);
  EXPECT_EQ(o.export_name, "vol");
  auto d = parse_nbd_uri("nbd://[fd00::1]");
  EXPECT_EQ(d.host, "[fd00::1]");
  EXPECT_EQ(d.port, 10809u);
  EXPECT_EQ(d.export_name, "");
}

TEST(NbdSpec, BadUris) {
  auto refused = [](const char* uri) {
    try {
      parse_nbd_uri(uri);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(refused("nbd+unix:///x").find("socket=PATH"), std::string::npos);
  EXPECT_NE(refused("nbd+unix:///x?socket=").find("needs a path"), std::string::npos);
  EXPECT_NE(refused("nbd+unix:///x?socket=/a&socket=/b").find("twice"), std::string::npos);
  EXPECT_NE(refused("nbd+unix:///x?sock=/a").find("'sock=/a'"), std::string::npos);
  EXPECT_NE(refused("nbd+unix://host/x?socket=/a").find("no host"), std::string::npos);
  EXPECT_NE(refused("nbd://").find("HOST[:PORT]"), std::string::npos);
  EXPECT_NE(refused("nbd://h:0/x").find("port"), std::string::npos);
  EXPECT_NE(refused("nbd://h:99999/x").find("port"), std::string::npos);
  EXPECT_NE(refused("nbd://h:p/x").find("port"), std::string::npos);
  EXPECT_NE(refused("nbd://user@h/x").find("bad host"), std::string::npos);
  EXPECT_NE(refused("nbd://h/x?tls=on").find("no query"), std::string::npos);
  EXPECT_NE(refused("nbd://h/a%zz").find("%-escape"), std::string::npos);
  EXPECT_NE(refused("nbd://h/a%00").find("%-escape"), std::string::npos);
  EXPECT_NE(refused("nbd://h/a%4").find("%-escape"), std::string::npos);
  EXPECT_NE(refused("nbds+vsock:///x").find("unsupported"), std::string::npos);
  EXPECT_NE(refused("nbd+vsock:///x").find("unsupported"), std::string::npos);
  EXPECT_NE(refused(("nbd://h/" + std::string(4097, 'a')).c_str()).find("longer"), std::string::npos);
}

TEST(NbdSpec, AsExportWithOptions) {
  auto s = parse_export_spec(
      "up=nbd+unix:///e?socket=/tmp/u.sock,reconnect-delay=5,connections=4,connect-timeout=3,"
      "readonly,luks-key-file=/k");
  EXPECT_EQ(s.backend, ExportSpec::Backend::nbd);
  EXPECT_EQ(s.nbd.socket, "/tmp/u.sock");
  EXPECT_EQ(s.nbd.reconnect_delay, std::chrono::seconds(5));
  EXPECT_EQ(s.nbd.connections, 4u);
  EXPECT_EQ(s.nbd.connect_timeout, std::chrono::seconds(3));
  EXPECT_TRUE(s.read_only);
  EXPECT_TRUE(s.nbd.read_only);
  EXPECT_EQ(s.luks_key_file, "/k");
  auto d = parse_export_spec("d=nbd://localhost/x");
  EXPECT_EQ(d.nbd.reconnect_delay, std::chrono::seconds(0));
  EXPECT_EQ(d.nbd.connections, 1u);
  EXPECT_EQ(d.nbd.connect_timeout, std::chrono::seconds(10));
  EXPECT_FALSE(d.nbd.read_only);
}

TEST(NbdSpec, BadOptionsQuoteTheArgument) {
  EXPECT_NE(error_of("x=nbd://h/e,connections=0").find("connections '0'"), std::string::npos);
  EXPECT_NE(error_of("x=nbd://h/e,connections=17").find("1-16"), std::string::npos);
  EXPECT_NE(error_of("x=nbd://h/e,reconnect-delay=-1").find("reconnect-delay"), std::string::npos);
  EXPECT_NE(error_of("x=nbd://h/e,connect-timeout=0").find("connect-timeout"), std::string::npos);
  EXPECT_NE(error_of("x=nbd://h/e,direct").find("unknown option 'direct' for the nbd backend"),
            std::string::npos);
  EXPECT_NE(error_of("x=nbd://h/e?x=1").find("--export 'x=nbd://h/e?x=1'"), std::string::npos);
}

TEST(NbdSpec, FormatsBackReadably) {
  auto s = parse_target_spec("nbd+unix:///e?socket=/s,reconnect-delay=7,connections=2,readonly");
  EXPECT_EQ(format_backend(s), "nbd+unix:///e?socket=/s,reconnect-delay=7,connections=2,readonly");
  auto again = parse_target_spec(format_backend(s));
  EXPECT_EQ(again.nbd.reconnect_delay, std::chrono::seconds(7));
  EXPECT_EQ(format_backend(parse_target_spec("nbd://h/e")), "nbd://h/e");
}

// nbds:// is nbd:// with TLS required; its options go with it (a hand-over's successor opens
// the upstream the same way), and refuse a clear URI.
TEST(NbdSpec, TlsUpstreams) {
  auto s = parse_target_spec("nbds+unix:///e?socket=/s,tls-psk-file=/k,tls-username=alice");
  EXPECT_TRUE(s.nbd.tls);
  EXPECT_EQ(s.nbd.socket, "/s");
  EXPECT_EQ(s.nbd.tls_psk_file, "/k");
  EXPECT_EQ(s.nbd.tls_username, "alice");
  EXPECT_EQ(format_backend(s), "nbds+unix:///e?socket=/s,tls-psk-file=/k,tls-username=alice");
  auto x509 = parse_target_spec("nbds://h:10810/e,tls-certificates=/etc/pki/volgate");
  EXPECT_TRUE(x509.nbd.tls);
  EXPECT_EQ(x509.nbd.host, "h");
  EXPECT_EQ(x509.nbd.port, 10810u);
  EXPECT_EQ(x509.nbd.tls_certificates, "/etc/pki/volgate");
  EXPECT_FALSE(parse_target_spec("nbd://h/e").nbd.tls);
  EXPECT_THROW(parse_target_spec("nbd://h/e,tls-psk-file=/k"), std::invalid_argument);
  EXPECT_THROW(parse_target_spec("nbds://h/e,tls-psk-file="), std::invalid_argument);
}
