#include "controller/api/request_parsing.hpp"

#include <cctype>

#include "common/untrusted_json.hpp"
#include "controller/api/api_error.hpp"

namespace volgate::controller {

using nlohmann::json;

std::string json_text(const json& body) { return body.dump(-1, ' ', false, json::error_handler_t::replace); }

ApiResponse json_response(int status, const json& body) { return {status, json_text(body), {}}; }

json parse_json(const std::string& body) {
  try {
    return parse_untrusted_json(body);
  } catch (const UntrustedJsonError& e) {
    bad_request(e.what());
  }
}

json parse_body(const std::string& body, const char* root, std::initializer_list<const char*> allowed,
                std::initializer_list<const char*> beside) {
  json j = parse_json(body);
  if (!j.is_object() || !j.contains(root) || !j[root].is_object())
    bad_request(std::string("The request body must be an object with a \"") + root + "\" object.");
  for (const auto& [key, value] : j.items()) {
    bool ok = key == root;
    for (const char* b : beside) ok = ok || key == b;
    if (!ok) bad_request("Unknown field '" + key + "' in the request body.");
  }
  json inner = std::move(j[root]);  // moved, not copied
  check_fields(inner, root, allowed);
  return inner;
}

void check_fields(const json& object, const std::string& where, std::initializer_list<const char*> allowed) {
  for (const auto& [key, value] : object.items()) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || key == a;
    if (!ok) bad_request("Unknown field '" + key + "' in " + where + ".");
  }
}

std::string ascii_lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string opt_string(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return {};
  if (!j[key].is_string()) bad_request(std::string("'") + key + "' must be a string.");
  return j[key].get<std::string>();
}

std::optional<std::string> changed_string(const json& j, const char* key) {
  if (!j.contains(key)) return std::nullopt;
  return opt_string(j, key);
}

std::optional<bool> opt_boolean(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const json& v = j[key];
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string()) {
    const std::string text = ascii_lowercase(v.get<std::string>());
    for (const char* yes : {"true", "1", "on", "yes", "y", "t"})
      if (text == yes) return true;
    for (const char* no : {"false", "0", "off", "no", "n", "f"})
      if (text == no) return false;
  }
  bad_request(std::string("'") + key + "' must be true or false.");
}

void check_length(const std::string& value, const char* field, size_t max_characters) {
  size_t characters = 0;
  for (unsigned char c : value) characters += (c & 0xC0) != 0x80;
  if (characters > max_characters)
    bad_request(std::string("'") + field + "' is longer than " + std::to_string(max_characters) + " characters.");
}

Metadata metadata_from_json(const json& value, const char* what) {
  Metadata metadata;
  if (value.is_null()) return metadata;
  if (!value.is_object()) bad_request(std::string("'") + what + "' must be an object of string values.");
  for (const auto& [key, item] : value.items()) {
    if (auto problem = metadata_key_problem(key)) bad_request("Invalid " + std::string(what) + " key '" + key.substr(0, 64) + "': " + *problem + ".");
    if (!item.is_string()) bad_request("The value of " + std::string(what) + " key '" + key + "' must be a string.");
    std::string text = item.get<std::string>();
    if (auto problem = metadata_value_problem(text)) bad_request("Invalid value of " + std::string(what) + " key '" + key + "': " + *problem + ".");
    metadata[key] = std::move(text);
  }
  return metadata;
}

const std::string& project_of(const ApiRequest& r, const char* param) { return checked_project_name(r.param(param)); }

const std::string& checked_project_name(const std::string& project) {
  if (!is_project_name(project)) bad_request("Project '" + project + "' must be 1-64 letters, digits, '-' or '_'.");
  return project;
}

std::string compute_project_of(const ApiRequest& request) {
  return request.params.count("project") ? project_of(request) : request.headers.caller.project;
}

}  // namespace volgate::controller
