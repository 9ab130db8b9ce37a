// volgate: a user-space storage gateway. One binary, one subcommand per job.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/log_format.hpp"
#include "controller/cli/controller_command.hpp"
#include "controller/cli/doctor_command.hpp"
#include "controller/cli/volume_command.hpp"
#include "gateway/gateway_command.hpp"
#include "gateway/luks_command.hpp"
#include "gateway/serve_command.hpp"
#include "gateway/serve_process.hpp"

int main(int argc, char** argv) {
  CLI::App app{"volgate: a user-space storage gateway (NBD exports of file, memory, RBD and iSCSI volumes, "
                "plain or LUKS-encrypted) and the volume controller that manages them"};
  app.set_version_flag("--version", "volgate 0.1.0");
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));

  volgate::gateway::ServeOptions serve_options;
  auto* serve = volgate::gateway::add_serve_command(app, serve_options);
  volgate::gateway::GatewayCommandOptions gateway_options;
  auto* gateway = volgate::gateway::add_gateway_command(app, gateway_options);
  volgate::gateway::LuksOptions luks_options;
  auto* luks = volgate::gateway::add_luks_command(app, luks_options);
  volgate::controller::ControllerOptions controller_options;
  auto* controller = volgate::controller::add_controller_command(app, controller_options);
  volgate::controller::DoctorOptions doctor_options;
  auto* doctor = volgate::controller::add_doctor_command(app, doctor_options);
  volgate::controller::ClientCommandOptions client_options;
  auto client = volgate::controller::add_client_commands(app, client_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "volgate: %s (see --help)\n", e.what());
    return 2;
  }

  // Before any thread or export exists (see serve_process.hpp).
  if (serve->parsed()) volgate::gateway::restart_with_malloc_settings(argv);
  auto logger = spdlog::stderr_color_mt("volgate");
  spdlog::set_default_logger(logger);
  spdlog::set_formatter(volgate::make_log_formatter("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %*"));
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (serve->parsed()) return volgate::gateway::run_serve(serve_options);
  if (gateway->parsed()) return volgate::gateway::run_gateway_command(gateway_options);
  if (luks->parsed()) return volgate::gateway::run_luks(*luks, luks_options);
  if (controller->parsed()) return volgate::controller::run_controller(controller_options);
  if (doctor->parsed()) return volgate::controller::run_doctor(doctor_options);
  if (auto rc = volgate::controller::run_client_commands(client, client_options)) return *rc;
  return 2;
}
