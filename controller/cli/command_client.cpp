#include "controller/cli/command_client.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <thread>
#include <cstdio>
#include <filesystem>

#include "crypto/secure_bytes.hpp"

namespace volgate::controller {

using nlohmann::json;

namespace {

// Draws "[#####.....]  42%" on stderr, rewriting the line.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  ~ProgressBar() { finish(); }
  void update(int percent) {
    if (!enabled_ || percent == last_) return;
    last_ = percent;
    constexpr int kWidth = 40;
    int filled = std::clamp(percent, 0, 100) * kWidth / 100;
    std::fprintf(stderr, "\r[%s%s] %3d%%", std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
                 percent);
    std::fflush(stderr);
    drawn_ = true;
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  bool enabled_;
  int last_ = -1;
  bool drawn_ = false;
};

std::string read_token(const ClientCommandOptions& o) {
  std::string path = o.token_file;
  if (path.empty() && o.url.starts_with("unix:")) {
    // The embedded default keeps the token beside the socket.
    std::string beside = std::filesystem::path(o.url.substr(5)).parent_path() / "token";
    if (::access(beside.c_str(), R_OK) == 0) path = beside;
  }
  if (path.empty()) throw CommandError("no API token: give --token-file PATH or set VOLGATE_TOKEN_FILE");
  auto bytes = crypto::read_key_file(path);
  std::string token(bytes.chars(), bytes.size());
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  for (char c : token)
    if (c < 0x21 || c > 0x7e) throw CommandError("token file " + path + " does not hold a token (one word of printable characters)");
  return token;
}

std::string check_url(const std::string& url) {
  if (url.empty()) throw CommandError("no controller URL: give --url unix:PATH|http://HOST:PORT|https://HOST:PORT or set VOLGATE_URL");
  return url;
}

}  // namespace

Client::Client(const ClientCommandOptions& o, const std::string& api_version, const std::string& service)
    : o_(o), api_(check_url(o.url), read_token(o), o.cacert) {
  if (!api_version.empty()) api_.set_api_version(api_version, service);
}

json Client::call(const std::string& method, const std::string& path, const std::optional<json>& body, int* status) {
  return call_path(method, "/v3/" + o_.project + path, body, status);
}

json Client::call_path(const std::string& method, const std::string& path, const std::optional<json>& body,
                       int* status) {
  auto r = api_.request(method, path, body);
  if (status) *status = r.status;
  if (r.status >= 400 && !(status && r.status == 404)) throw CommandError(ApiClient::error_message(r));
  return r.body;
}

std::string text(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::printf("%s\n", out.c_str());
  };
  line(header);
  for (const auto& row : rows) line(row);
}

void print_fields(const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t w = 0;
  for (const auto& [k, v] : fields) w = std::max(w, k.size());
  for (const auto& [k, v] : fields) std::printf("%-*s  %s\n", static_cast<int>(w), k.c_str(), v.c_str());
}


std::optional<json> wait_while(Client& client, const ClientCommandOptions& o, const std::string& path,
                               const char* root, const std::string& transient, bool copy) {
  ProgressBar bar(copy && (o.progress || ::isatty(STDERR_FILENO)));
  for (;;) {
    int status = 0;
    json body = client.call("GET", path, std::nullopt, &status);
    if (status == 404) return std::nullopt;
    json item = body[root];
    if (item["status"] != transient) {
      if (item["status"] == "available") bar.update(100);
      return item;
    }
    if (item.contains("volgate:progress")) bar.update(item["volgate:progress"].get<int>());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace volgate::controller
