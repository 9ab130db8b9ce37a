// Fuzz target: the controller's REST API (VolumeApi::handle), on a real volume service with
// SQLite and a file pool, as `volgate controller` runs it minus the sockets.
//
// The input is a series of requests separated by NUL bytes, each "METHOD TARGET\nBODY". So
// that a campaign can reach volumes and snapshots it created, "{vol}" and "{snap}" in a target
// or body stand for the ids of the last volume and snapshot the API reported. So that small
// inputs can make the large bodies a real client may send (up to the server's 1 MiB), "{xN}"
// repeats the byte before it N more times: `[{x300000}` is 300,001 opening brackets, the kind
// of nesting that once overflowed the controller's stack.
//
// What must hold for every request: handle() returns (it promises never to throw), the status
// is an HTTP status but not 500, the body is empty or JSON, and an error's body is one Cinder
// fault whose code is the status. A 500 is an exception nobody expected: with SQLite in memory
// and a pool in a temporary directory, any input the API refuses must get a 4xx saying why.
// Each input starts from an empty database and pool.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <string>
#include <string_view>
#include <vector>

#include "controller/pools/file_pool.hpp"
#include "controller/store/sqlite_store.hpp"
#include "controller/api/volume_api.hpp"

namespace {

using namespace volgate::controller;
using nlohmann::json;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "volume_api_fuzz: %s\n", what.c_str());
  std::abort();
}

void replace_all(std::string& text, std::string_view token, const std::string& with) {
  for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at + with.size()))
    text.replace(at, token.size(), with);
}

// Expands every "{xN}" (see above); the text stays within the API server's 1 MiB body limit.
void expand_repeats(std::string& text) {
  constexpr size_t kMaxBody = 1 << 20;
  for (size_t at = text.find("{x"); at != std::string::npos; at = text.find("{x", at)) {
    const size_t close = text.find('}', at);
    if (at == 0 || close == std::string::npos || close - at > 9) {
      at += 2;
      continue;
    }
    size_t count = 0;
    for (size_t i = at + 2; i < close && count <= kMaxBody; ++i) {
      if (text[i] < '0' || text[i] > '9') {
        count = 0;
        break;
      }
      count = count * 10 + static_cast<size_t>(text[i] - '0');
    }
    const size_t room = kMaxBody > text.size() ? kMaxBody - text.size() : 0;
    count = std::min(count, room);
    text.replace(at, close - at + 1, std::string(count, text[at - 1]));
    at += count;
  }
}

void check_response(const ApiResponse& r, const std::string& request) {
  if (r.status < 200 || r.status > 599) fail("status " + std::to_string(r.status) + " for " + request);
  if (r.status == 500) fail("an unexpected exception for " + request + ": " + r.body);
  if (r.body.empty()) return;
  const json body = json::parse(r.body, nullptr, false);
  if (body.is_discarded()) fail("a body that is not JSON for " + request + ": " + r.body);
  if (r.status < 400) return;
  // {"badRequest": {"message": "...", "code": 400}}
  if (!body.is_object() || body.size() != 1) fail("an error body that is not one fault: " + r.body);
  const json& fault = body.begin().value();
  if (!fault.is_object() || !fault.contains("message") || !fault["message"].is_string() ||
      fault.value("code", 0) != r.status)
    fail("a malformed fault for " + request + ": " + r.body);
}

// Remembers the ids the API hands out, for "{vol}" and "{snap}".
void remember_ids(const ApiResponse& r, std::string& volume, std::string& snapshot) {
  if (r.status >= 300 || r.body.empty()) return;
  const json body = json::parse(r.body, nullptr, false);
  if (!body.is_object()) return;
  for (auto [key, id] : {std::pair{"volume", &volume}, std::pair{"snapshot", &snapshot}}) {
    auto it = body.find(key);
    if (it != body.end() && it->is_object() && it->contains("id") && (*it)["id"].is_string())
      *id = (*it)["id"];
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir = [] {
    spdlog::set_level(spdlog::level::off);  // the service logs every failed flow
    return std::filesystem::temp_directory_path() /
           ("volgate-api-fuzz-" + std::to_string(::getpid()));
  }();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    ControllerConfig config = default_config(dir);
    SqliteStore store(":memory:");
    std::vector<std::unique_ptr<Pool>> pools;
    pools.push_back(std::make_unique<FilePool>(config.pools[0]));
    VolumeService service(config, store, std::move(pools), std::nullopt,
                          ServiceOptions{.run_inline = true});
    VolumeApi api(service);

    std::string volume = "none", snapshot = "none";
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    size_t start = 0;
    for (int n = 0; start <= input.size() && n < 32; ++n) {
      size_t end = input.find('\0', start);
      if (end == std::string_view::npos) end = input.size();
      std::string request(input.substr(start, end - start));
      start = end + 1;

      const size_t space = request.find(' ');
      const size_t newline = request.find('\n');
      if (space == std::string::npos || (newline != std::string::npos && newline < space)) continue;
      const std::string method = request.substr(0, space);
      std::string target = request.substr(space + 1, newline == std::string::npos ? std::string::npos
                                                                                 : newline - space - 1);
      std::string body = newline == std::string::npos ? "" : request.substr(newline + 1);
      for (std::string* text : {&target, &body}) {
        replace_all(*text, "{vol}", volume);
        replace_all(*text, "{snap}", snapshot);
      }
      expand_repeats(body);
      const ApiResponse response = api.handle(method, target, body);
      check_response(response, method + " " + target);
      remember_ids(response, volume, snapshot);
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
