#pragma once
// Reading request bodies, path segments and answers the way every route of the API does:
// bodies are untrusted JSON shaped {"<root>": {...}}, refused field by field with a 400 that
// names the field; answers are JSON with any bytes that are not UTF-8 replaced.
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "controller/api/router.hpp"
#include "controller/domain/metadata.hpp"

namespace volgate::controller {

// JSON text of `body`; bytes that are not UTF-8 (a client may echo any) become U+FFFD.
std::string json_text(const nlohmann::json& body);
ApiResponse json_response(int status, const nlohmann::json& body);

// The body as JSON, nested at most kMaxRequestJsonDepth deep; 400 otherwise.
nlohmann::json parse_json(const std::string& body);
// {"<root>": {...}}: returns the inner object; refuses top-level keys other than `root` and
// `beside`, and any inner key not in `allowed`.
nlohmann::json parse_body(const std::string& body, const char* root, std::initializer_list<const char*> allowed,
                          std::initializer_list<const char*> beside = {});

// 400 naming the first key of the object `object` that is not in `allowed` ("Unknown field 'K'
// in WHERE.").
void check_fields(const nlohmann::json& object, const std::string& where, std::initializer_list<const char*> allowed);
// `text` in ASCII lower case: Cinder takes states and boolean words in any case.
std::string ascii_lowercase(std::string text);

// A string field, empty when absent or null; 400 when it is there and not a string.
std::string opt_string(const nlohmann::json& j, const char* key);
// Like opt_string, but absent stays absent (for updates: null sets the empty string).
std::optional<std::string> changed_string(const nlohmann::json& j, const char* key);
// A boolean field as Cinder reads them: true/false, or one of its strings ("true", "yes", "1",
// "off", ...); absent or null is nothing. 400 for anything else.
std::optional<bool> opt_boolean(const nlohmann::json& j, const char* key);
// Cinder's limit for names, descriptions and the like: at most 255 characters.
void check_length(const std::string& value, const char* field, size_t max_characters = 255);
// A metadata object ({"key": "value", ...}), every key and value checked (see metadata.hpp);
// null is empty.
Metadata metadata_from_json(const nlohmann::json& value, const char* what = "metadata");

// `project` if it is a valid project name (1-64 letters, digits, '-', '_'); 400 otherwise.
const std::string& checked_project_name(const std::string& project);
// The path segment `param` (default: the project), checked: ids and names end up in logs and
// in the database.
const std::string& project_of(const ApiRequest& request, const char* param = "project");
// The project of a Nova request: /v2.1/{project}/... acts in that project, the bare /v2.1/...
// in its token's (the operator's token_file is project "default"'s).
std::string compute_project_of(const ApiRequest& request);

}  // namespace volgate::controller
