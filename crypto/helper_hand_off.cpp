#include "crypto/helper_hand_off.hpp"

#include "common/current_context.hpp"

namespace volgate::crypto {

void HelperHandOff::hand_to_helper(Work work, Then then) {
  work_ = work;
  then_ = then;
  post_back_.expect(current_io_context());
  CryptoWorkers::instance().submit(*this);
}

void HelperHandOff::run() noexcept {
  outcome_ = {};
  try {
    work_(*this);
  } catch (const std::exception&) {  // the cipher failed (OpenSSL, libgcrypt) or memory ran out
    outcome_ = std::make_error_code(std::errc::io_error);
  }
  post_back_.post([this] { then_(*this, outcome_); });
}

}  // namespace volgate::crypto
