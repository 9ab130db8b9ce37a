#pragma once
// A small blocking client of the controller's REST API for the command line: one connection
// per request over a unix socket (unix:PATH), TCP (http://HOST:PORT) or TLS (https://HOST:PORT,
// the server's certificate checked against a CA and its name against HOST).
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace volgate::controller {

struct ClientResponse {
  int status = 0;
  nlohmann::json body;  // null when the response had none
};

class ApiClient {
 public:
  // Throws std::invalid_argument for a URL of another form. `cacert`: the PEM file of the CAs
  // an https:// server's certificate must chain to; empty: the system's CAs.
  ApiClient(const std::string& url, std::string token, std::string cacert = {});
  ~ApiClient();  // wipes the token
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // Throws std::runtime_error when the controller cannot be reached or answers garbage.
  ClientResponse request(const std::string& method, const std::string& target,
                         const std::optional<nlohmann::json>& body = std::nullopt) const;

  // The message of a Cinder-style fault body, or a description of the status.
  static std::string error_message(const ClientResponse& response);

  const std::string& url() const { return url_; }
  // The microversion to ask for ("3.44" of "volume", "2.89" of "compute"); none (the base
  // version) by default.
  void set_api_version(const std::string& version, const std::string& service = "volume") {
    api_version_ = service + " " + version;
  }

 private:
  std::string url_;
  std::string unix_path_;
  std::string host_;
  std::string port_;
  std::string token_;
  bool tls_ = false;
  std::string cacert_;
  std::string api_version_;  // the OpenStack-API-Version header's value
};

}  // namespace volgate::controller
