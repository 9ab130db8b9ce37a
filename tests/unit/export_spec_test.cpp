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
