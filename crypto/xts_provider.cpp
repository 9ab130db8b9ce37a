#include "crypto/xts_provider.hpp"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <time.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "crypto/gcrypt_xts.hpp"
#include "crypto/openssl_xts.hpp"
#include "crypto/sha256.hpp"

namespace volgate::crypto {
namespace {

// The IEEE 1619 keys: vector 4's (AES-128 pair) and vector 10's (AES-256 pair).
constexpr const char* kKey128 = "2718281828459045235360287471352631415926535897932384626433832795";
constexpr const char* kKey256 =
    "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592";

// A plaintext of bytes 00 01 .. ff repeated, `unit` bytes long, encrypted as one data unit;
// the SHA-256 of the ciphertext (the IEEE vectors' ciphertexts begin 27a7479b... and 1c3b3a10...).
struct KnownAnswer {
  const char* name;
  const char* key_hex;
  uint64_t tweak;
  size_t unit;
  const char* ciphertext_sha256;
};

constexpr KnownAnswer kKnownAnswers[] = {
    {"IEEE 1619 vector 4 (AES-128, 512-byte unit)", kKey128, 0, 512,
     "ebee4d64dd2395bb2d6a2d37a0a48ecb2bf4913cfc99d27c2214f2f4144715ea"},
    {"IEEE 1619 vector 10 (AES-256, 512-byte unit)", kKey256, 0xff, 512,
     "e97e974fa393af794f7a4684395814cf820de60a01eaec677d87b452e316b364"},
    {"AES-128, 4096-byte unit", kKey128, 0x123456789a, 4096,
     "e8d7e668cbadcba83efc206be63bc7dd6f7717b41e5c2d0467d37a9593ec1b30"},
    {"AES-256, 4096-byte unit", kKey256, 0x123456789a, 4096,
     "1503b179922a435ab601f7f30baadbd92aa45b7612fcac577884fa3e69520216"},
};

std::vector<std::byte> from_hex(std::string_view hex) {
  std::vector<std::byte> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::byte>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

std::vector<unsigned char> counting_bytes(size_t length) {
  std::vector<unsigned char> v(length);
  for (size_t i = 0; i < length; ++i) v[i] = static_cast<unsigned char>(i & 0xff);
  return v;
}

// The wrong answer of one known answer, or empty. Besides the vector itself it checks what
// XtsCipher relies on: two units in one call, in place, each under its own tweak, and the
// decryption back.
std::string check_one(const XtsEngineFactory& factory, const KnownAnswer& answer) {
  const auto key = from_hex(answer.key_hex);
  auto encrypt = factory(key, true);
  auto decrypt = factory(key, false);
  const auto plain = counting_bytes(answer.unit);
  std::vector<unsigned char> out(answer.unit);
  if (!encrypt->transform(answer.tweak, 1, answer.unit, plain.data(), out.data(), answer.unit))
    return std::string(answer.name) + ": encrypting failed";
  if (to_hex(sha256(std::as_bytes(std::span(out)))) != answer.ciphertext_sha256)
    return std::string(answer.name) + ": encrypting gives other bytes than the known answer";

  // Units n-1 and n in place in one call: the second must match the known answer.
  std::vector<unsigned char> both(2 * answer.unit);
  for (size_t i = 0; i < both.size(); ++i) both[i] = plain[i % answer.unit];
  if (!encrypt->transform(answer.tweak - 1, 1, answer.unit, both.data(), both.data(), both.size()) ||
      CRYPTO_memcmp(both.data() + answer.unit, out.data(), answer.unit) != 0)
    return std::string(answer.name) + ": the second of two units encrypted in place in one call differs";

  std::vector<unsigned char> back(answer.unit);
  if (!decrypt->transform(answer.tweak, 1, answer.unit, out.data(), back.data(), answer.unit) || back != plain)
    return std::string(answer.name) + ": decrypting gives other bytes than the plaintext";
  return {};
}

// Flips one output bit: VOLGATE_TEST_XTS_WRONG's stand-in for a provider that computes wrongly.
class WrongEngine final : public XtsEngine {
 public:
  explicit WrongEngine(std::unique_ptr<XtsEngine> inner) : inner_(std::move(inner)) {}
  bool transform(uint64_t tweak, uint64_t step, size_t unit, const unsigned char* in, unsigned char* out,
                 size_t length) override {
    const bool ok = inner_->transform(tweak, step, unit, in, out, length);
    if (length) out[length - 1] ^= 1;
    return ok;
  }

 private:
  std::unique_ptr<XtsEngine> inner_;
};

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

std::mutex selection_mutex;
std::atomic<int> selected{-1};  // an XtsProvider once chosen

}  // namespace

std::string_view to_string(XtsProvider provider) {
  return provider == XtsProvider::gcrypt ? "gcrypt" : "openssl";
}

std::optional<XtsProvider> parse_xts_provider(std::string_view name) {
  if (name == "openssl") return XtsProvider::openssl;
  if (name == "gcrypt") return XtsProvider::gcrypt;
  return std::nullopt;
}

std::string provider_version(XtsProvider provider) {
  if (provider == XtsProvider::gcrypt) return GcryptXts::version();
  return OpenSSL_version(OPENSSL_VERSION);
}

std::unique_ptr<XtsEngine> make_xts_engine(XtsProvider provider, std::span<const std::byte> key, bool encrypting) {
  if (provider == XtsProvider::gcrypt) return std::make_unique<GcryptXts>(key, encrypting);
  return std::make_unique<OpensslXts>(key, encrypting);
}

std::string check_known_answers(const XtsEngineFactory& factory) {
  for (const KnownAnswer& answer : kKnownAnswers) {
    std::string wrong;
    try {
      wrong = check_one(factory, answer);
    } catch (const std::exception& e) {
      wrong = std::string(answer.name) + ": " + e.what();
    }
    if (!wrong.empty()) return wrong;
  }
  return {};
}

double measure_xts_speed(const XtsEngineFactory& factory, size_t unit, std::chrono::milliseconds duration) {
  std::vector<std::byte> key(64);
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::byte>(i * 37 + 11);
  auto engine = factory(key, true);
  std::vector<unsigned char> data(64 << 10, 0x5a);
  // The thread's own CPU time, so that a busy machine slows every candidate alike.
  const double start = thread_cpu_seconds();
  const double seconds = std::chrono::duration<double>(duration).count();
  size_t bytes = 0;
  uint64_t tweak = 0;
  double elapsed = 0;
  do {
    if (!engine->transform(tweak, unit / 512, unit, data.data(), data.data(), data.size()))
      throw std::runtime_error("AES-XTS failed during the speed test");
    tweak += data.size() / 512;
    bytes += data.size();
    elapsed = thread_cpu_seconds() - start;
  } while (elapsed < seconds);
  return static_cast<double>(bytes) / elapsed / 1e9;
}

XtsSelection select_xts_provider(std::optional<XtsProvider> forced) {
  std::lock_guard lock(selection_mutex);
  const char* wrong_env = std::getenv("VOLGATE_TEST_XTS_WRONG");
  const std::string wrong = wrong_env ? wrong_env : "";
  std::vector<XtsProvider> candidates = {XtsProvider::openssl, XtsProvider::gcrypt};
  if (forced) candidates = {*forced};

  XtsSelection selection{};
  const XtsProbe* best = nullptr;
  for (XtsProvider provider : candidates) {
    XtsEngineFactory factory = [provider](std::span<const std::byte> key, bool encrypting) {
      return make_xts_engine(provider, key, encrypting);
    };
    if (wrong == to_string(provider))
      factory = [inner = factory](std::span<const std::byte> key, bool encrypting) -> std::unique_ptr<XtsEngine> {
        return std::make_unique<WrongEngine>(inner(key, encrypting));
      };
    XtsProbe probe{.provider = provider};
    probe.failure = check_known_answers(factory);
    if (probe.failure.empty() && candidates.size() > 1) {
      probe.gbps_512 = measure_xts_speed(factory, 512, std::chrono::milliseconds(8));
      probe.gbps_4096 = measure_xts_speed(factory, 4096, std::chrono::milliseconds(8));
    }
    // A provider that was asked for is refused by the exception below, which says why.
    if (!probe.failure.empty() && !forced)
      spdlog::error("AES-XTS: {} ({}) gave a wrong answer and will not be used: {}", to_string(provider),
                    provider_version(provider), probe.failure);
    selection.probes.push_back(probe);
  }
  // The fastest over both sector sizes: the least time for a byte at 512 plus one at 4096.
  auto cost = [](const XtsProbe& p) { return 1 / p.gbps_512 + 1 / p.gbps_4096; };
  for (const XtsProbe& probe : selection.probes)
    if (probe.failure.empty() && (!best || (probe.gbps_512 > 0 && cost(probe) < cost(*best)))) best = &probe;
  if (!best) {
    if (forced)
      throw std::runtime_error("AES-XTS provider " + std::string(to_string(*forced)) +
                               " gave a wrong answer, so volgate will not encrypt with it: " +
                               selection.probes.front().failure);
    throw std::runtime_error("no AES-XTS provider gave the known answers; volgate will not encrypt with any");
  }
  selection.chosen = best->provider;
  selected.store(static_cast<int>(best->provider));

  std::string speeds;
  for (const XtsProbe& p : selection.probes)
    if (p.failure.empty() && p.gbps_512 > 0)
      speeds += fmt::format("{}{} {:.2f}/{:.2f}", speeds.empty() ? "" : ", ", to_string(p.provider), p.gbps_512,
                            p.gbps_4096);
  spdlog::info("AES-XTS: {} ({}), {}{}", to_string(best->provider), provider_version(best->provider),
               forced ? "as asked" : "the fastest that gave the known answers",
               speeds.empty() ? "" : " (GB/s per core at 512/4096-byte sectors: " + speeds + ")");
  return selection;
}

XtsProvider default_xts_provider() {
  const int chosen = selected.load();
  if (chosen >= 0) return static_cast<XtsProvider>(chosen);
  return select_xts_provider(std::nullopt).chosen;
}

}  // namespace volgate::crypto
