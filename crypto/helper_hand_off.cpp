#include "crypto/helper_hand_off.hpp"

#include "common/current_context.hpp"

namespace volgate::crypto {

void HelperHandOff::hand_to_helper(Work work, Then then) {
  work_ = work;
  then_ = then;
  io_ = &current_io_context();
  busy_.emplace(io_->get_executor());
  CryptoWorkers::instance().submit(*this);
}

void HelperHandOff::run() noexcept {
  outcome_ = {};
  try {
    work_(*this);
  } catch (const std::exception&) {  // the cipher failed (OpenSSL, libgcrypt) or memory ran out
    outcome_ = std::make_error_code(std::errc::io_error);
  }
  // The handler may run at once and drop busy_; were that the io_context's last work, its
  // thread could return from run() and destroy it while post() is still waking it. A second
  // unit of work, dropped only once post() has returned, rules that out.
  const auto posting = *busy_;
  post_back_.post(*io_, [this] {
    busy_.reset();  // the io_context's own count of handlers keeps it running from here
    then_(*this, outcome_);
  });
}

}  // namespace volgate::crypto
