#pragma once
// Who sent an API request: the project and role of the token it carried (see token_table.hpp).
#include <optional>
#include <string>
#include <string_view>

namespace volgate::controller {

// Cinder's and Nova's two default personas: a member acts in its own project; an admin in any,
// and may do what only operators do (force-detach, quotas, services).
enum class Role { member, admin };

std::string_view to_string(Role role);
// "admin" or "member"; nullopt for anything else.
std::optional<Role> role_from_string(std::string_view text);

// What a project may be called: 1-64 letters, digits, '-' and '_' (it goes into URLs, logs and
// the database).
bool is_project_name(std::string_view project);

struct Caller {
  std::string project;
  Role role = Role::member;
  bool admin() const { return role == Role::admin; }
};

}  // namespace volgate::controller
