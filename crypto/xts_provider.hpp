#pragma once
// Which AES-XTS implementation encrypts volume data, chosen at run time and proven first.
//
// The candidates are OpenSSL (what every other cipher in volgate uses) and libgcrypt, whose
// VAES path is the faster one on cores that have those instructions. Before a provider may
// encrypt a byte of a volume it must reproduce known answers: IEEE 1619's vectors 4 (AES-128)
// and 10 (AES-256) on 512-byte data units, and one 4096-byte unit under each key size whose
// ciphertext was computed independently (Python's cryptography package); each is also
// decrypted back. Among those that pass, a short speed test at both sector sizes picks the
// fastest. A provider that fails is logged as an error and never used; if it was the one asked
// for (`--xts-provider`), the choice fails, and so does the process that asked.
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/xts_engine.hpp"

namespace volgate::crypto {

enum class XtsProvider { openssl, gcrypt };

std::string_view to_string(XtsProvider provider);
// "openssl" or "gcrypt"; nullopt for anything else.
std::optional<XtsProvider> parse_xts_provider(std::string_view name);
// "OpenSSL 3.0.x" or "libgcrypt 1.10.1".
std::string provider_version(XtsProvider provider);

// A keyed engine of `provider` for one direction (see OpensslXts and GcryptXts for what they
// throw).
std::unique_ptr<XtsEngine> make_xts_engine(XtsProvider provider, std::span<const std::byte> key, bool encrypting);

using XtsEngineFactory = std::function<std::unique_ptr<XtsEngine>(std::span<const std::byte> key, bool encrypting)>;

// The first known answer `factory`'s engines get wrong ("AES-256, 4096-byte unit: decrypting
// gives other bytes"), or empty when every one is right.
std::string check_known_answers(const XtsEngineFactory& factory);

// AES-256-XTS speed of `factory`'s engines in GB per second of one thread, over 64 KiB
// requests of `unit`-byte data units, measured for about `duration`.
double measure_xts_speed(const XtsEngineFactory& factory, size_t unit, std::chrono::milliseconds duration);

struct XtsProbe {
  XtsProvider provider;
  std::string failure;  // the wrong answer; empty when it passed
  double gbps_512 = 0;  // measured only when it passed
  double gbps_4096 = 0;
};

struct XtsSelection {
  XtsProvider chosen;
  std::vector<XtsProbe> probes;  // every candidate, in the order tried
};

// Proves every candidate (or only `forced`), picks the fastest that passes, makes it the
// process's default (default_xts_provider) and logs the choice with the speeds. Throws
// std::runtime_error when `forced` fails, or when every candidate does.
//
// Test hook: VOLGATE_TEST_XTS_WRONG=NAME makes that provider's engines flip one output bit
// during the probe only, so tests can show a wrong answer refused; nothing outside the probe
// ever uses the altered engines.
XtsSelection select_xts_provider(std::optional<XtsProvider> forced);

// The provider XtsCipher uses when not told: the last selection's, or on first use the result
// of select_xts_provider(nullopt).
XtsProvider default_xts_provider();

}  // namespace volgate::crypto
