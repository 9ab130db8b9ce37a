#include "gateway/export_spec.hpp"
#include "gateway/backend_spec.hpp"

#include <stdexcept>
#include <vector>

#include "backends/file_device.hpp"
#include "backends/iscsi_multipath_device.hpp"
#include "backends/memory_device.hpp"
#include "backends/nbd_device.hpp"
#include "common/size.hpp"
#include "crypto/luks_device.hpp"
#include "crypto/secure_bytes.hpp"
#include "gateway/iscsi_spec.hpp"
#include "gateway/nbd_spec.hpp"

namespace volgate::gateway {

// The export syntax is NAME= in front of the backend syntax.
#define VOLGATE_BACKEND_SYNTAX_HELP \
    "  BACKEND: file:PATH    an existing file or block device (or one created with size=)\n" \
    "           memory:SIZE  a sparse RAM disk, e.g. memory:4G\n" \
    "           rbd:POOL/[NAMESPACE/]IMAGE[@SNAPSHOT]  a Ceph RBD image (snapshots: read-only)\n" \
    "           iscsi://PORTAL[,PORTAL...]/TARGET-IQN/LUN  an iSCSI LUN, with failover across\n" \
    "                        the portals (PORTAL = HOST[:PORT], default port 3260)\n" \
    "           nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH  another NBD\n" \
    "                        server's export (default port 10809; ',' in a name as %2C);\n" \
    "                        nbds:// and nbds+unix:// the same over TLS\n" \
    "  OPTION:  readonly     refuse writes\n" \
    "           size=SIZE    file: create the file, or grow it, to SIZE\n" \
    "           direct       file: O_DIRECT (requests must be 4096-byte aligned)\n" \
    "           ceph-conf=PATH  rbd: the cluster's ceph.conf (default: /etc/ceph/ceph.conf)\n" \
    "           ceph-id=ID   rbd: connect as client.ID (default: admin)\n" \
    "           keyring=PATH rbd: the client's keyring (default: as ceph.conf says)\n" \
    "           luks-key-file=PATH  serve the decrypted payload of the LUKS1/LUKS2 container\n" \
    "                        on BACKEND, unlocked with the passphrase in PATH ('-': stdin)\n" \
    "           iscsi: chap-user=USER, chap-secret-file=PATH, mutual-chap-user=USER,\n" \
    "           mutual-chap-secret-file=PATH, initiator-name=IQN,\n" \
    "           path-policy=failover|round-robin, no-path-timeout=SECONDS (default 30),\n" \
    "           path-check-interval=SECONDS (default 5), reservations=on|off (default on:\n" \
    "           fence lost paths with SCSI persistent reservations), io-timeout=SECONDS (a\n" \
    "           request unanswered this long fails over; default 3), login-timeout=SECONDS\n" \
    "           (connect, log in and check a portal; default 5)\n" \
    "           nbd: reconnect-delay=SECONDS (a lost connection is made again and requests\n" \
    "           wait this long for it, then fail; default 0: they fail at once),\n" \
    "           connections=N (upstream connections if the server allows multi-conn; default\n" \
    "           1), connect-timeout=SECONDS (connect and handshake; default 10);\n" \
    "           nbds: tls-psk-file=PATH (username:hexkey lines) or tls-certificates=DIR\n" \
    "           (ca-cert.pem, and client-cert.pem/client-key.pem if asked; default: the\n" \
    "           system's CAs), tls-username=NAME (the PSK identity)\n" \
    "  SIZE is bytes or a number with K, M, G, T (powers of 1024)."

const char* const kBackendSyntaxHelp = "BACKEND[,OPTION...]\n" VOLGATE_BACKEND_SYNTAX_HELP;
const char* const kExportSyntaxHelp = "NAME=BACKEND[,OPTION...]\n" VOLGATE_BACKEND_SYNTAX_HELP;
#undef VOLGATE_BACKEND_SYNTAX_HELP

namespace {

// Errors quote the whole argument, labelled the way the user typed it ("--export", "TARGET").
struct Source {
  std::string_view label;
  std::string_view text;
};

[[noreturn]] void bad(const Source& source, const std::string& why) {
  throw std::invalid_argument(std::string(source.label) + " '" + std::string(source.text) + "': " + why);
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
          c == ':'))
      return false;
  return true;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t at = text.find(sep, start);
    parts.push_back(text.substr(start, at - start));
    if (at == std::string_view::npos) break;
    start = at + 1;
  }
  return parts;
}

}  // namespace

namespace {

// POOL/[NAMESPACE/]IMAGE[@SNAPSHOT], as the rbd tool writes it. Ceph allows almost any
// character in these names, but not the separators themselves, and never an empty name.
void parse_rbd_image(const Source& text, std::string_view name, backends::RbdOptions& rbd) {
  size_t slash = name.find('/');
  if (slash == std::string_view::npos) bad(text, "rbd: expects POOL/IMAGE[@SNAPSHOT]");
  rbd.pool = std::string(name.substr(0, slash));
  std::string_view rest = name.substr(slash + 1);
  if (size_t ns_end = rest.find('/'); ns_end != std::string_view::npos && ns_end < rest.find('@')) {
    rbd.rados_namespace = std::string(rest.substr(0, ns_end));
    if (rbd.rados_namespace->empty()) bad(text, "rbd: namespace name is empty");
    rest = rest.substr(ns_end + 1);
  }
  size_t at = rest.find('@');
  rbd.image = std::string(rest.substr(0, at));
  if (at != std::string_view::npos) {
    rbd.snapshot = std::string(rest.substr(at + 1));
    if (rbd.snapshot->empty() || rbd.snapshot->find('@') != std::string::npos)
      bad(text, "rbd: snapshot name after '@' must be non-empty and contain no '@'");
  }
  if (rbd.pool.empty()) bad(text, "rbd: pool name is empty");
  if (rbd.image.empty()) bad(text, "rbd: image name is empty");
  if (rbd.image.find('/') != std::string::npos)
    bad(text, "rbd: expects POOL/[NAMESPACE/]IMAGE[@SNAPSHOT]");
}

// BACKEND[,OPTION...] into `spec`.
void parse_backend(const Source& text, std::string_view backend_and_options, ExportSpec& spec,
                   bool allow_luks) {
  std::vector<std::string_view> parts;
  if (backend_and_options.starts_with(kIscsiScheme)) {
    // The portal list has commas of its own.
    size_t length = iscsi_backend_length(backend_and_options);
    parts = split(backend_and_options.substr(std::min(length + 1, backend_and_options.size())), ',');
    if (length == backend_and_options.size()) parts.clear();
    parts.insert(parts.begin(), backend_and_options.substr(0, length));
  } else {
    parts = split(backend_and_options, ',');
  }
  std::string_view backend = parts.front();
  if (backend.starts_with("file:")) {
    spec.backend = ExportSpec::Backend::file;
    spec.path = std::string(backend.substr(5));
    if (spec.path.empty()) bad(text, "file: needs a path");
  } else if (backend.starts_with("memory:")) {
    spec.backend = ExportSpec::Backend::memory;
    auto size = parse_size(backend.substr(7));
    if (!size || *size == 0) bad(text, "memory size '" + std::string(backend.substr(7)) + "' is not a size");
    spec.memory_size = *size;
  } else if (backend.starts_with("rbd:")) {
    spec.backend = ExportSpec::Backend::rbd;
    parse_rbd_image(text, backend.substr(4), spec.rbd);
  } else if (backend.starts_with(kIscsiScheme)) {
    spec.backend = ExportSpec::Backend::iscsi;
    try {
      spec.iscsi = parse_iscsi_uri(backend);
    } catch (const std::invalid_argument& e) {
      bad(text, e.what());
    }
  } else if (is_nbd_uri(backend)) {
    spec.backend = ExportSpec::Backend::nbd;
    try {
      spec.nbd = parse_nbd_uri(backend);
    } catch (const std::invalid_argument& e) {
      bad(text, e.what());
    }
  } else {
    bad(text, "unknown backend '" + std::string(backend) +
                  "' (expected file:PATH, memory:SIZE, rbd:POOL/IMAGE[@SNAPSHOT], "
                  "iscsi://PORTAL/TARGET-IQN/LUN, nbd://HOST[:PORT]/EXPORT or "
                  "nbd+unix:///EXPORT?socket=PATH)");
  }

  const bool is_file = spec.backend == ExportSpec::Backend::file;
  const bool is_rbd = spec.backend == ExportSpec::Backend::rbd;
  const bool is_iscsi = spec.backend == ExportSpec::Backend::iscsi;
  const bool is_nbd = spec.backend == ExportSpec::Backend::nbd;
  const char* backend_name = is_file ? "file" : is_rbd ? "rbd" : is_iscsi ? "iscsi" : is_nbd ? "nbd" : "memory";
  for (size_t i = 1; i < parts.size(); ++i) {
    std::string_view option = parts[i];
    size_t oeq = option.find('=');
    std::string_view key = option.substr(0, oeq);
    std::string_view value = oeq == std::string_view::npos ? "" : option.substr(oeq + 1);
    bool has_value = oeq != std::string_view::npos;
    if (is_iscsi) {
      try {
        if (apply_iscsi_option(spec.iscsi, key, value, has_value)) continue;
      } catch (const std::invalid_argument& e) {
        bad(text, e.what());
      }
    }
    if (is_nbd) {
      try {
        if (apply_nbd_option(spec.nbd, key, value, has_value)) continue;
      } catch (const std::invalid_argument& e) {
        bad(text, e.what());
      }
    }
    if (key == "readonly" && !has_value) {
      spec.read_only = true;
    } else if (key == "direct" && !has_value && is_file) {
      spec.direct = true;
    } else if (key == "size" && has_value && is_file) {
      auto size = parse_size(value);
      if (!size || *size == 0) bad(text, "size '" + std::string(value) + "' is not a size");
      spec.file_size = size;
    } else if (key == "ceph-conf" && has_value && is_rbd) {
      if (value.empty()) bad(text, "ceph-conf needs a path");
      spec.rbd.ceph_conf = std::string(value);
    } else if (key == "ceph-id" && has_value && is_rbd) {
      if (value.empty() || value.starts_with("client."))
        bad(text, "ceph-id is the client name without 'client.', e.g. ceph-id=admin");
      spec.rbd.ceph_id = std::string(value);
    } else if (key == "keyring" && has_value && is_rbd) {
      if (value.empty()) bad(text, "keyring needs a path");
      spec.rbd.keyring = std::string(value);
    } else if (key == "luks-key-file" && has_value && allow_luks) {
      if (value.empty()) bad(text, "luks-key-file needs a path");
      spec.luks_key_file = std::string(value);
    } else {
      bad(text, "unknown option '" + std::string(option) + "' for the " + backend_name + " backend");
    }
  }
  if (is_iscsi) {
    spec.iscsi.read_only = spec.read_only;
    try {
      check_iscsi_options(spec.iscsi);
    } catch (const std::invalid_argument& e) {
      bad(text, e.what());
    }
  }
  spec.nbd.read_only = spec.read_only;
  if (spec.read_only && spec.file_size) bad(text, "size= creates or grows the file; it cannot be readonly");
  if (is_rbd && spec.rbd.snapshot) spec.read_only = true;  // snapshots are immutable
}

}  // namespace

ExportSpec parse_export_spec(std::string_view text) {
  const Source source{"--export", text};
  ExportSpec spec;
  size_t eq = text.find('=');
  if (eq == std::string_view::npos) bad(source, "expected NAME=BACKEND");
  spec.name = std::string(text.substr(0, eq));
  if (!valid_name(spec.name))
    bad(source, "export name must be 1-255 characters of letters, digits, '-', '_', '.', ':'");
  parse_backend(source, text.substr(eq + 1), spec, true);
  return spec;
}

ExportSpec parse_backend_spec(std::string_view text, std::string_view label) {
  ExportSpec spec;
  spec.name = "backend";
  parse_backend({label, text}, text, spec, true);
  return spec;
}

ExportSpec parse_target_spec(std::string_view text) {
  ExportSpec spec;
  spec.name = "target";
  parse_backend({"TARGET", text}, text, spec, false);
  return spec;
}

std::shared_ptr<backends::BlockDevice> open_device(const ExportSpec& spec) {
  auto base = open_storage(spec);
  if (!spec.luks_key_file) return base;
  // The caller keeps the process out of core dumps (`volgate serve` always does). The
  // passphrase and key copies we own are also locked and wiped; OpenSSL's expanded key schedule
  // is wiped when the export closes but lives in ordinary memory.
  auto passphrase = crypto::read_key_file(*spec.luks_key_file);
  auto container = crypto::LuksContainer::load(*base);
  return std::make_shared<crypto::LuksDevice>(base, container.unlock(passphrase));
}

std::shared_ptr<backends::BlockDevice> open_storage(const ExportSpec& spec) {
  switch (spec.backend) {
    case ExportSpec::Backend::memory:
      return std::make_shared<backends::MemoryDevice>(spec.memory_size, spec.read_only);
    case ExportSpec::Backend::file:
      return backends::FileDevice::open({.path = spec.path,
                                         .read_only = spec.read_only,
                                         .direct = spec.direct,
                                         .create_size = spec.file_size});
    case ExportSpec::Backend::rbd: {
      auto options = spec.rbd;
      options.read_only = spec.read_only;
      return backends::RbdDevice::open(options);
    }
    case ExportSpec::Backend::iscsi:
      return backends::IscsiMultipathDevice::open(spec.iscsi);
    case ExportSpec::Backend::nbd: {
      auto options = spec.nbd;
      options.read_only = spec.read_only;
      return backends::NbdDevice::open(options);
    }
  }
  throw std::logic_error("unhandled backend");
}

std::string format_backend(const ExportSpec& spec) {
  std::string text;
  auto option = [&](std::string_view key, std::string_view value) {
    text += ",";
    text += key;
    if (!value.empty()) {
      text += "=";
      text += value;
    }
  };
  switch (spec.backend) {
    case ExportSpec::Backend::file:
      text = "file:" + spec.path;
      if (spec.direct) option("direct", "");
      break;
    case ExportSpec::Backend::memory:
      text = "memory:" + std::to_string(spec.memory_size);
      break;
    case ExportSpec::Backend::rbd: {
      const auto& r = spec.rbd;
      text = "rbd:" + r.pool + "/" + (r.rados_namespace ? *r.rados_namespace + "/" : "") + r.image +
             (r.snapshot ? "@" + *r.snapshot : "");
      if (r.ceph_conf) option("ceph-conf", *r.ceph_conf);
      if (r.ceph_id != "admin") option("ceph-id", r.ceph_id);
      if (r.keyring) option("keyring", *r.keyring);
      break;
    }
    case ExportSpec::Backend::iscsi: {
      const auto& i = spec.iscsi;
      text = std::string(kIscsiScheme);
      for (size_t n = 0; n < i.portals.size(); ++n) text += (n ? "," : "") + i.portals[n];
      text += "/" + i.target + "/" + std::to_string(i.lun);
      const backends::IscsiOptions defaults;
      if (i.initiator_name != defaults.initiator_name) option("initiator-name", i.initiator_name);
      if (!i.chap_user.empty()) option("chap-user", i.chap_user);
      if (!i.chap_secret_file.empty()) option("chap-secret-file", i.chap_secret_file);
      if (!i.mutual_chap_user.empty()) option("mutual-chap-user", i.mutual_chap_user);
      if (!i.mutual_chap_secret_file.empty()) option("mutual-chap-secret-file", i.mutual_chap_secret_file);
      break;
    }
    case ExportSpec::Backend::nbd: {
      const auto& n = spec.nbd;
      const backends::NbdOptions defaults;
      text = n.uri;
      if (n.reconnect_delay != defaults.reconnect_delay)
        option("reconnect-delay", std::to_string(n.reconnect_delay.count()));
      if (n.connections != defaults.connections) option("connections", std::to_string(n.connections));
      if (!n.tls_certificates.empty()) option("tls-certificates", n.tls_certificates);
      if (!n.tls_psk_file.empty()) option("tls-psk-file", n.tls_psk_file);
      if (!n.tls_username.empty()) option("tls-username", n.tls_username);
      break;
    }
  }
  if (spec.read_only && !(spec.backend == ExportSpec::Backend::rbd && spec.rbd.snapshot)) option("readonly", "");
  return text;
}

}  // namespace volgate::gateway
