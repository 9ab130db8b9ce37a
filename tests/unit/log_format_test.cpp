// A log message is one line whatever text it carries: a client cannot forge a line of its own.
#include "common/log_format.hpp"

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <sstream>

namespace volgate {
namespace {

std::string logged(std::string_view message, std::string pattern = "%l %*") {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::logger logger("test", sink);
  logger.set_formatter(make_log_formatter(std::move(pattern)));
  logger.info("{}", message);
  return out.str();
}

TEST(LogFormat, PlainTextIsWrittenAsItIs) {
  EXPECT_EQ(logged("volume 'é ünïcode' created: 1 GiB"), "info volume 'é ünïcode' created: 1 GiB\n");
}

TEST(LogFormat, ALineBreakCannotStartALineOfItsOwn) {
  const std::string forged = "image x\n2026-12-05T23:59:59.000 info GET /v3/beta/volumes (admin of default): 200";
  const std::string line = logged("cannot open " + forged);
  EXPECT_EQ(line, "info cannot open image x\\n2026-12-05T23:59:59.000 info GET /v3/beta/volumes (admin of default): 200\n");
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
}

TEST(LogFormat, EveryControlCharacterIsEscaped) {
  EXPECT_EQ(logged(std::string("a\rb\tc\x1b[2Jd\x7f" "e\0f", 14)), "info a\\rb\\tc\\x1b[2Jd\\x7fe\\x00f\n");
}

TEST(LogFormat, ThePatternAroundTheMessageStays) {
  EXPECT_EQ(logged("x\ny", "[%n] %l: %* (end)"), "[test] info: x\\ny (end)\n");
}

}  // namespace
}  // namespace volgate
