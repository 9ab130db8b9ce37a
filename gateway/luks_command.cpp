#include "gateway/luks_command.hpp"

#include <cstdio>
#include <exception>

#include "common/size.hpp"
#include "crypto/secure_bytes.hpp"
#include "gateway/export_spec.hpp"
#include "gateway/serve_process.hpp"

namespace volgate::gateway {
namespace {

const char* const kTargetHelp =
    "Where the container lives: BACKEND[,OPTION...] as in `serve --export`, e.g. file:disk.img\n"
    "or file:new.img,size=10G";

void add_target(CLI::App* command, LuksOptions& options) {
  command->add_option("TARGET", options.target, kTargetHelp)->required();
}

void add_key_file(CLI::App* command, LuksOptions& options, const char* help) {
  command->add_option("--key-file", options.key_file, help)->required()->type_name("PATH");
}

// How a new keyslot derives its key from the passphrase (format and add-key).
void add_pbkdf_options(CLI::App* command, crypto::LuksFormatOptions& f) {
  command->add_option("--pbkdf", f.pbkdf, "argon2id (LUKS2 default), argon2i or pbkdf2 (LUKS1 default)")
      ->check(CLI::IsMember({"argon2id", "argon2i", "pbkdf2"}));
  command->add_option("--iter-time", f.iter_time_ms, "Milliseconds the PBKDF should take (default 2000)")
      ->check(CLI::Range(1, 600000))->type_name("MS");
  command->add_option("--pbkdf-memory", f.pbkdf_memory_kib, "Argon2 memory cost in KiB (default: up to 1 GiB)")
      ->check(CLI::Range(32, 4 * 1024 * 1024))->type_name("KIB");
  command->add_option("--pbkdf-force-iterations", f.pbkdf_iterations,
                      "A fixed PBKDF cost instead of timing one (pbkdf2: >= 1000; argon2: passes)")
      ->check(CLI::Range(1u, 4294967295u))->type_name("N");
}

std::string describe_slots(const crypto::LuksInfo& info) {
  std::string text;
  for (const auto& slot : info.keyslots) {
    if (!text.empty()) text += "\n              ";
    text += std::to_string(slot.index) + ": " + slot.pbkdf;
    if (slot.pbkdf == "pbkdf2")
      text += ", " + std::to_string(slot.iterations) + " iterations";
    else
      text += ", " + std::to_string(slot.iterations) + " passes, " + std::to_string(slot.memory_kib) + " KiB";
  }
  return text.empty() ? "none" : text;
}

void print_info(const crypto::LuksInfo& info) {
  std::printf("version:      %s\n", info.version.c_str());
  std::printf("uuid:         %s\n", info.uuid.c_str());
  std::printf("cipher:       %s, %u-bit key\n", info.cipher.c_str(), info.key_bits);
  std::printf("sector size:  %u\n", info.sector_size);
  std::printf("data offset:  %llu (%s)\n", static_cast<unsigned long long>(info.data_offset),
              format_size(info.data_offset).c_str());
  std::printf("payload:      %llu (%s)\n", static_cast<unsigned long long>(info.payload_size),
              format_size(info.payload_size).c_str());
  std::printf("iv offset:    %llu\n", static_cast<unsigned long long>(info.iv_offset));
  std::printf("keyslots:     %s\n", describe_slots(info).c_str());
  std::printf("servable:     %s\n",
              info.unsupported.empty() ? "yes" : ("no: " + info.unsupported).c_str());
}

int format(const LuksOptions& options) {
  auto storage = open_storage(parse_target_spec(options.target));
  auto passphrase = crypto::read_key_file(options.key_file);
  if (!options.force) {
    bool has_luks = true;
    try {
      crypto::LuksContainer::load(*storage);
    } catch (const crypto::LuksError& e) {
      has_luks = e.kind != crypto::LuksError::Kind::not_luks;
    }
    if (has_luks)
      throw std::runtime_error(options.target +
                               " already holds a LUKS container; --force overwrites it (its data is lost)");
  }
  std::fprintf(stderr, "volgate luks: formatting %s, deriving the keyslot key...\n", options.target.c_str());
  auto container = crypto::LuksContainer::format(*storage, options.format, passphrase);
  print_info(container.info());
  return 0;
}

int dump(const LuksOptions& options) {
  auto storage = open_storage(parse_target_spec(options.target));
  auto container = crypto::LuksContainer::load(*storage);
  print_info(container.info());
  return 0;
}

int add_key(const LuksOptions& options) {
  if (options.key_file == "-" && options.new_key_file == "-")
    throw std::invalid_argument("--key-file and --new-key-file cannot both be standard input");
  auto storage = open_storage(parse_target_spec(options.target));
  auto passphrase = crypto::read_key_file(options.key_file);
  auto new_passphrase = crypto::read_key_file(options.new_key_file);
  auto container = crypto::LuksContainer::load(*storage);
  int slot = container.add_key(passphrase, new_passphrase, options.format);
  std::printf("added keyslot %d\n", slot);
  return 0;
}

int remove_key(const LuksOptions& options) {
  auto storage = open_storage(parse_target_spec(options.target));
  auto passphrase = crypto::read_key_file(options.key_file);
  auto container = crypto::LuksContainer::load(*storage);
  int slot = container.remove_key(passphrase);
  std::printf("removed keyslot %d\n", slot);
  return 0;
}

}  // namespace

CLI::App* add_luks_command(CLI::App& app, LuksOptions& options) {
  auto* luks = app.add_subcommand(
      "luks",
      "LUKS1/LUKS2 header work on any backend, compatible with cryptsetup and QEMU. Passphrases\n"
      "come from key files (the whole file, byte for byte, as cryptsetup --key-file reads it;\n"
      "'-' is standard input), never from the command line.");
  luks->require_subcommand(1);

  auto* format = luks->add_subcommand(
      "format", "Write a new LUKS header (destroys the data). Defaults match cryptsetup's for LUKS2.");
  auto& f = options.format;
  format->add_option("--type", f.type, "luks2 or luks1")->check(CLI::IsMember({"luks2", "luks1"}))
      ->capture_default_str();
  format->add_option("--cipher", f.cipher, "The data cipher; volgate serves aes-xts-plain64")
      ->check(CLI::IsMember({"aes-xts-plain64"}))->capture_default_str();
  format->add_option("--key-size", f.key_bits, "Volume key bits: 512 (AES-256-XTS) or 256 (AES-128-XTS)")
      ->check(CLI::IsMember({256, 512}))->capture_default_str();
  format->add_option("--sector-size", f.sector_size,
                     "Encryption sector: 512 or 4096 (default: 4096 for LUKS2 when the size\n"
                     "allows, 512 for LUKS1)")
      ->check(CLI::IsMember({512, 4096}));
  add_pbkdf_options(format, f);
  format->add_flag("--force", options.force, "Overwrite an existing LUKS container");
  add_key_file(format, options, "Passphrase for the first keyslot");
  add_target(format, options);

  auto* dump = luks->add_subcommand("dump", "Describe the container: cipher, sectors, offsets, keyslots");
  add_target(dump, options);

  auto* add = luks->add_subcommand("add-key", "Add a keyslot for a new passphrase");
  add_key_file(add, options, "A passphrase that opens the container now");
  add->add_option("--new-key-file", options.new_key_file, "The passphrase to add")
      ->required()->type_name("PATH");
  add_pbkdf_options(add, f);
  add_target(add, options);

  auto* remove = luks->add_subcommand(
      "remove-key", "Remove the keyslot a passphrase opens (never the last one)");
  add_key_file(remove, options, "The passphrase whose keyslot goes");
  add_target(remove, options);
  return luks;
}

int run_luks(const CLI::App& luks, const LuksOptions& options) {
  const CLI::App* sub = luks.get_subcommands().front();
  const std::string name = sub->get_name();
  try {
    // Every subcommand holds a passphrase or the volume key in memory: no core dump may carry it.
    make_undumpable();
    if (name == "format") return format(options);
    if (name == "dump") return dump(options);
    if (name == "add-key") return add_key(options);
    if (name == "remove-key") return remove_key(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "volgate luks %s: %s\n", name.c_str(), e.what());
    return 2;
  }
  return 2;
}

}  // namespace volgate::gateway
