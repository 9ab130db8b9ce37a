#include "common/log_format.hpp"

#include <spdlog/pattern_formatter.h>

#include <string_view>

namespace volgate {
namespace {

class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& message, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    const std::string_view text(message.payload.data(), message.payload.size());
    size_t clean_from = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      if (c >= 0x20 && c != 0x7f) continue;
      dest.append(text.data() + clean_from, text.data() + i);
      clean_from = i + 1;
      const char escaped[] = {'\\', c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : 'x', kHex[c >> 4], kHex[c & 15]};
      dest.append(escaped, escaped + (escaped[1] == 'x' ? 4 : 2));
    }
    dest.append(text.data() + clean_from, text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<EscapedMessage>(); }
};

}  // namespace

std::unique_ptr<spdlog::formatter> make_log_formatter(std::string pattern) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<EscapedMessage>('*').set_pattern(std::move(pattern));
  return formatter;
}

}  // namespace volgate
