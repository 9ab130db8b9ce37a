#include "controller/cli/doctor_command.hpp"

#include <cstdio>
#include <filesystem>

#include "controller/controller_config.hpp"
#include "controller/doctor/libvirt_checks.hpp"
#include "controller/doctor/storage_checks.hpp"
#include "controller/doctor/system_checks.hpp"

namespace volgate::controller {

using doctor::Finding;
using doctor::Severity;

CLI::App* add_doctor_command(CLI::App& app, DoctorOptions& options) {
  auto* cmd = app.add_subcommand(
      "doctor",
      "Check this host's prerequisites for the controller and the gateway, and say what is wrong and\n"
      "how to fix it: the state directory and the gateway's socket group, libvirt at the controller's\n"
      "libvirt_uri and its QEMU (NBD disks on virtio-scsi and virtio-blk), each RBD pool's Ceph config\n"
      "and keyring, each iSCSI pool's tgtd and portals, memory for LUKS2's Argon2, the clock, and\n"
      "/dev/fuse. Reads the controller's config (--config, or the embedded default for --state-dir,\n"
      "default /var/lib/volgate) and changes nothing. Exit code 0 when nothing required is missing\n"
      "(warnings allowed), 1 when something is.");
  cmd->add_option("--config", options.config_file, "The controller's JSON config file")->type_name("PATH");
  cmd->add_option("--state-dir", options.state_dir, "The controller's state directory (default /var/lib/volgate)")
      ->type_name("DIR");
  cmd->add_option("--libvirt-uri", options.libvirt_uri, "Check this libvirt URI instead of the config's (none: skip)")
      ->type_name("URI");
  cmd->add_flag("--fuse", options.fuse, "/dev/fuse is required (volgate serve --fuse will be used)");
  cmd->add_option("--pbkdf-memory", options.pbkdf_memory_kib,
                  "Memory (KiB) opening a LUKS2 volume may take (default 1048576, cryptsetup's Argon2 default)")
      ->type_name("KIB")
      ->check(CLI::Range(uint64_t{1024}, uint64_t{4} * 1024 * 1024));
  cmd->add_option("--timeout", options.timeout_seconds, "Seconds each check may wait for an answer (default 5)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.1, 60.0));
  return cmd;
}

namespace {

const char* label(Severity s) {
  switch (s) {
    case Severity::ok: return "ok";
    case Severity::skipped: return "skip";
    case Severity::warning: return "warn";
    case Severity::failure: return "FAIL";
  }
  return "?";
}

void print(const Finding& f) {
  std::printf("%-5s %-22s %s\n", label(f.severity), f.check.c_str(), f.what.c_str());
  if (!f.fix.empty()) std::printf("%-5s %-22s fix: %s\n", "", "", f.fix.c_str());
}

}  // namespace

int run_doctor(const DoctorOptions& options) {
  ControllerConfig config;
  try {
    const std::string state_dir =
        options.state_dir.empty() ? std::string() : std::filesystem::absolute(options.state_dir).string();
    config = options.config_file.empty() ? default_config(state_dir.empty() ? "/var/lib/volgate" : state_dir)
                                         : load_config(options.config_file, state_dir);
  } catch (const std::exception& e) {
    print({.check = "config", .severity = Severity::failure, .what = e.what(),
           .fix = "correct the config (see README, section Controller)"});
    return 1;
  }
  if (!options.libvirt_uri.empty()) config.libvirt_uri = options.libvirt_uri == "none" ? "" : options.libvirt_uri;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_seconds * 1000));

  std::vector<Finding> findings;
  auto add = [&](std::vector<Finding> more) { findings.insert(findings.end(), more.begin(), more.end()); };
  add(doctor::check_directories(config, !config.libvirt_uri.empty()));
  add(doctor::check_libvirt(config.libvirt_uri, timeout));
  add(doctor::check_ceph(config.pools));
  add(doctor::check_iscsi(config.pools, timeout));
  findings.push_back(doctor::check_pbkdf_memory(options.pbkdf_memory_kib ? options.pbkdf_memory_kib
                                                                         : doctor::kDefaultPbkdfMemoryKib));
  findings.push_back(doctor::check_clock());
  findings.push_back(doctor::check_fuse(options.fuse));

  size_t failures = 0, warnings = 0;
  for (const auto& f : findings) {
    print(f);
    failures += f.severity == Severity::failure;
    warnings += f.severity == Severity::warning;
  }
  if (failures)
    std::printf("%zu problem(s) to fix before volgate can work here, %zu warning(s)\n", failures, warnings);
  else
    std::printf("nothing required is missing (%zu warning(s))\n", warnings);
  std::fflush(stdout);
  return failures ? 1 : 0;
}

}  // namespace volgate::controller
