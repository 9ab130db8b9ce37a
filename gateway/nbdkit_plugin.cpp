// The nbdkit plugin: `nbdkit nbdkit-volgate-plugin.so SPEC` (or `nbdkit volgate SPEC` once
// installed in nbdkit's plugin directory) serves the device stack that SPEC names, the
// BACKEND[,OPTION...] part of `volgate serve --export`, parsed and built by the same code
// (gateway/export_spec). nbdkit then puts its filters and transports in front of it.
//
// nbdkit calls a plugin synchronously, on as many threads as it likes (thread model parallel);
// our devices are asynchronous and must be called from a thread that runs an io_context marked
// current. Each nbdkit thread gets one of its own (a SyncIo, as command-line tools use) and
// runs its request to completion there: the device is called right on that thread, and what
// completes later (an io_uring completion, a librbd callback posted back, an iSCSI reply, the
// cipher work of a large LUKS request) is run by that thread while it waits. A request so
// blocks only its own nbdkit thread, and requests that complete at memory speed (RAM, the page
// cache, small LUKS requests) need no thread change at all, as with nbdkit's own file plugin.
// Handing requests to worker threads of the plugin's instead cost two thread wake-ups per
// request: measured, 0.17x nbdkit-file's IOPS at queue depth 1 and 0.46x at depth 32 on a
// loaded 2-core machine.
//
// The plugin starts no thread of its own; devices that do (librados, the iSCSI multipath
// device) are opened in .after_fork, as the SDK asks of every thread a plugin causes, since
// nbdkit may fork into the background after .get_ready and a fork keeps only the forking
// thread. Everything else that can fail (parsing SPEC, opening a file, unlocking LUKS) happens
// before, in .config and .get_ready, where nbdkit still shows errors to the user and exits
// non-zero.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cinttypes>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "backends/device_front.hpp"
#include "common/log_format.hpp"
#include "crypto/crypto_workers.hpp"
#include "backends/sync_io.hpp"
#include "crypto/xts_provider.hpp"
#include "gateway/backend_spec.hpp"
#include "gateway/serve_process.hpp"
#include "nbd/protocol.hpp"

namespace volgate::gateway {
namespace {

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

using backends::BlockDevice;
using backends::DeviceCapabilities;

struct Plugin {
  std::optional<std::string> spec_text;
  std::optional<ExportSpec> spec;
  std::optional<crypto::XtsProvider> xts_provider;  // xts-provider=; unset: auto
  std::shared_ptr<BlockDevice> device;
  // Every request goes through it (range, alignment and read-only checked once; zeroes and FUA
  // emulated where the device has none), as in volgate serve.
  std::optional<backends::DeviceFront> front;
  DeviceCapabilities caps;  // as the front offers them
};
Plugin plugin_state;

// What the devices log goes where nbdkit's own messages go (stderr, or syslog once nbdkit is in
// the background): warnings and errors always, the rest with nbdkit -v.
class NbdkitSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const std::string text(msg.payload.data(), msg.payload.size());
    if (msg.level >= spdlog::level::warn)
      nbdkit_error("%s", text.c_str());
    else
      nbdkit_debug("%s", text.c_str());
  }
  void flush_() override {}
};

// Backends whose opening starts no thread, so it can happen in .get_ready. librados and the
// iSCSI multipath device start threads as they open.
bool opens_without_threads(const ExportSpec& spec) {
  return spec.backend == ExportSpec::Backend::file || spec.backend == ExportSpec::Backend::memory;
}

int open_device() {
  try {
    plugin_state.device = gateway::open_device(*plugin_state.spec);
  } catch (const std::exception& e) {
    nbdkit_error("volgate: %s", e.what());
    return -1;
  }
  plugin_state.front.emplace(*plugin_state.device);
  plugin_state.caps = plugin_state.front->capabilities();
  nbdkit_debug("volgate: serving %s, %" PRIu64 " bytes", plugin_state.device->description().c_str(),
               plugin_state.front->size());
  return 0;
}

// nbdkit has closed every connection by now: no request is in flight.
void release() {
  plugin_state.front.reset();
  plugin_state.device.reset();
}

// The calling nbdkit thread's io_context, marked current for the thread's life.
backends::SyncIo& thread_io() {
  thread_local backends::SyncIo io;
  return io;
}

// Runs start(done) on the calling thread until done(ec) is called; returns ec.
template <class Start>
std::error_code run(Start&& start) {
  return thread_io().run(std::forward<Start>(start));
}

int fail(const char* what, uint64_t length, uint64_t offset, std::error_code ec) {
  const int error = backends::errno_of(ec);  // nbdkit turns it into the NBD error
  // ENOTSUP answers a fast zero that would be slow, or makes nbdkit emulate: not a failure.
  if (error != ENOTSUP && error != EOPNOTSUPP)
    nbdkit_error("%s of %" PRIu64 " bytes at %" PRIu64 " failed: %s", what, length, offset,
                 ec.message().c_str());
  nbdkit_set_error(error);
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

void volgate_unload() { release(); }

int volgate_config(const char* key, const char* value) {
  const std::string_view k(key);
  if (k == "spec") {
    if (plugin_state.spec_text) {
      nbdkit_error("volgate: one SPEC per nbdkit (got '%s' and '%s')", plugin_state.spec_text->c_str(),
                   value);
      return -1;
    }
    plugin_state.spec_text = value;
    try {
      plugin_state.spec = parse_backend_spec(value, "SPEC");
    } catch (const std::exception& e) {
      nbdkit_error("volgate: %s", e.what());
      return -1;
    }
    return 0;
  }
  if (k == "xts-provider") {
    if (std::string_view(value) == "auto") return 0;
    plugin_state.xts_provider = crypto::parse_xts_provider(value);
    if (plugin_state.xts_provider) return 0;
    nbdkit_error("volgate: xts-provider=%s: give auto, openssl or gcrypt", value);
    return -1;
  }
  nbdkit_error("volgate: unknown parameter '%s' (expected SPEC or xts-provider=; see nbdkit volgate --help)", key);
  return -1;
}

int volgate_config_complete() {
  if (!plugin_state.spec) {
    nbdkit_error("volgate: no SPEC given: nbdkit volgate BACKEND[,OPTION...], e.g. file:disk.img");
    return -1;
  }
  if (plugin_state.spec->luks_key_file == "-") {
    if (!nbdkit_stdio_safe()) {
      nbdkit_error("volgate: luks-key-file=- reads standard input, which nbdkit uses here (-s)");
      return -1;
    }
    // These open after nbdkit forks (see volgate_get_ready), when standard input may be gone.
    if (!opens_without_threads(*plugin_state.spec)) {
      nbdkit_error("volgate: luks-key-file=- works with file: and memory: only; give rbd: and iscsi:// a key file");
      return -1;
    }
  }
  return 0;
}

int volgate_get_ready() {
  // The process will hold a LUKS volume key and guest data, as `volgate serve` does.
  try {
    make_undumpable();
  } catch (const std::exception& e) {
    nbdkit_error("volgate: %s", e.what());
    return -1;
  }
  auto logger = std::make_shared<spdlog::logger>("volgate", std::make_shared<NbdkitSink>());
  logger->set_formatter(make_log_formatter("%*"));
  spdlog::set_default_logger(std::move(logger));
  // A named AES-XTS provider is proven before anything is served, as `volgate serve` does.
  if (plugin_state.xts_provider) {
    try {
      crypto::select_xts_provider(plugin_state.xts_provider);
    } catch (const std::exception& e) {
      nbdkit_error("volgate: %s", e.what());
      return -1;
    }
  }
  if (opens_without_threads(*plugin_state.spec)) return open_device();
  return 0;
}

// RBD and iSCSI devices, which start threads as they open. A LUKS device opened in .get_ready
// started the cipher helpers, which a fork (into the background, or of --run's command) left
// in the parent: they start again here.
int volgate_after_fork() {
  crypto::CryptoWorkers::after_fork();
  return plugin_state.device ? 0 : open_device();
}

void volgate_cleanup() { release(); }

void volgate_dump_plugin() {
  std::printf("volgate_backends=file,memory,rbd,iscsi,nbd\n");
  std::printf("volgate_encryption=luks1,luks2\n");
  std::printf("volgate_spec=BACKEND[,OPTION...] as volgate serve --export NAME=... takes it\n");
}

// Connections share the one device and need no state of their own. With -r, nbdkit refuses
// writes itself, as it does when can_write says no.
void* volgate_open(int) { return NBDKIT_HANDLE_NOT_NEEDED; }

// ---------------------------------------------------------------------------------------------
// What the device can do, from its capabilities

int64_t volgate_get_size(void*) { return static_cast<int64_t>(plugin_state.front->size()); }

int volgate_block_size(void*, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
  *minimum = std::max<uint32_t>(plugin_state.caps.min_block_size, 1);
  *preferred = std::max(plugin_state.caps.preferred_block_size, *minimum);
  *maximum = nbd::kMaxPayload;  // as volgate serve: the size every NBD client accepts
  return 0;
}

int volgate_can_write(void*) { return !plugin_state.caps.read_only; }
int volgate_can_flush(void*) { return plugin_state.caps.can_flush; }
int volgate_is_rotational(void*) { return 0; }
int volgate_can_trim(void*) { return plugin_state.caps.can_trim; }
// The front writes zeroes and makes writes durable itself where the device has no way of its
// own, so nbdkit need not emulate either.
int volgate_can_zero(void*) { return plugin_state.caps.can_zero; }
// Whenever zeroing is offered: the front answers a fast zero it cannot do with ENOTSUP, as the
// flag asks. (nbdkit 1.32 passes the flag on even where the plugin said no, and then aborts
// on its own assertion: one client request would end the server.)
int volgate_can_fast_zero(void*) { return plugin_state.caps.can_zero; }
int volgate_can_fua(void*) { return plugin_state.caps.can_fua ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE; }
int volgate_can_multi_conn(void*) { return plugin_state.caps.can_multi_conn; }
int volgate_can_extents(void*) { return plugin_state.caps.can_block_status; }
int volgate_can_cache(void*) { return plugin_state.caps.can_cache ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE; }

// ---------------------------------------------------------------------------------------------
// Requests. nbdkit has checked the range against the size and refuses writes where can_write
// said no; the front refuses what is not aligned to the device's block size (a LUKS sector),
// which .block_size advertises, as volgate serve does.

int volgate_pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t) {
  std::span<std::byte> data(static_cast<std::byte*>(buf), count);
  auto ec = run([&](auto done) {
    plugin_state.front->read(offset, data, std::move(done));
  });
  return ec ? fail("read", count, offset, ec) : 0;
}

int volgate_pwrite(void*, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  std::span<const std::byte> data(static_cast<const std::byte*>(buf), count);
  const bool fua = flags & NBDKIT_FLAG_FUA;
  auto ec = run([&](auto done) {
    plugin_state.front->write(offset, data, {.fua = fua}, std::move(done));
  });
  return ec ? fail("write", count, offset, ec) : 0;
}

int volgate_flush(void*, uint32_t) {
  auto ec = run([&](auto done) { plugin_state.front->flush(std::move(done)); });
  return ec ? fail("flush", 0, 0, ec) : 0;
}

int volgate_trim(void*, uint32_t count, uint64_t offset, uint32_t flags) {
  // FUA on a trim (native FUA): the deallocation is durable before the answer, as volgate serve.
  const bool fua = flags & NBDKIT_FLAG_FUA;
  auto ec = run([&](auto done) { plugin_state.front->trim(offset, count, {.fua = fua}, std::move(done)); });
  return ec ? fail("trim", count, offset, ec) : 0;
}

int volgate_zero(void*, uint32_t count, uint64_t offset, uint32_t flags) {
  const backends::ZeroFlags zero{.may_trim = bool(flags & NBDKIT_FLAG_MAY_TRIM),
                                 .fast_only = bool(flags & NBDKIT_FLAG_FAST_ZERO),
                                 .fua = bool(flags & NBDKIT_FLAG_FUA)};
  auto ec = run([&](auto done) {
    plugin_state.front->write_zeroes(offset, count, zero, std::move(done));
  });
  return ec ? fail("write_zeroes", count, offset, ec) : 0;
}

int volgate_extents(void*, uint32_t count, uint64_t offset, uint32_t, nbdkit_extents* extents) {
  std::vector<backends::Extent> found;
  auto ec = run([&](auto done) {
    plugin_state.front->block_status(offset, count,
                                      [&found, done = std::move(done)](std::error_code e, std::vector<backends::Extent> list) {
                                        found = std::move(list);
                                        done(e);
                                      });
  });
  if (!ec && found.empty()) ec = backends::errno_code(EIO);  // a device must describe something
  if (ec) return fail("block_status", count, offset, ec);
  uint64_t at = offset;
  for (const auto& e : found) {
    const uint32_t type = (e.hole ? NBDKIT_EXTENT_HOLE : 0) | (e.zero ? NBDKIT_EXTENT_ZERO : 0);
    if (nbdkit_add_extent(extents, at, e.length, type) == -1) return -1;  // it set the error
    at += e.length;
  }
  return 0;
}

int volgate_cache(void*, uint32_t count, uint64_t offset, uint32_t) {
  auto ec = run([&](auto done) {
    plugin_state.front->cache(offset, count, std::move(done));
  });
  return ec ? fail("cache", count, offset, ec) : 0;
}

const std::string& config_help() {
  static const std::string text =
      std::string("[spec=]BACKEND[,OPTION...]  the storage to serve, written as for\n"
                  "  `volgate serve --export NAME=BACKEND[,OPTION...]`; passphrases only from a\n"
                  "  luks-key-file (never on this command line):\n") +
      kBackendSyntaxHelp +
      "\nxts-provider=auto|openssl|gcrypt  the AES-XTS implementation of LUKS exports (default\n"
      "  auto: the fastest that gives the known answers; see volgate serve --help)";
  return text;
}

nbdkit_plugin make_plugin() {
  nbdkit_plugin p{};
  p.name = "volgate";
  p.longname = "volgate device stack (file, memory, Ceph RBD, iSCSI multipath, NBD upstream; LUKS on any)";
  p.version = "1";
  p.description = "serves one volgate device stack, named as volgate serve --export names it";
  p.unload = volgate_unload;
  p.config = volgate_config;
  p.config_complete = volgate_config_complete;
  p.config_help = config_help().c_str();
  p.magic_config_key = "spec";
  p.get_ready = volgate_get_ready;
  p.after_fork = volgate_after_fork;
  p.cleanup = volgate_cleanup;
  p.dump_plugin = volgate_dump_plugin;
  p.open = volgate_open;
  p.get_size = volgate_get_size;
  p.block_size = volgate_block_size;
  p.can_write = volgate_can_write;
  p.can_flush = volgate_can_flush;
  p.is_rotational = volgate_is_rotational;
  p.can_trim = volgate_can_trim;
  p.can_zero = volgate_can_zero;
  p.can_fast_zero = volgate_can_fast_zero;
  p.can_fua = volgate_can_fua;
  p.can_multi_conn = volgate_can_multi_conn;
  p.can_extents = volgate_can_extents;
  p.can_cache = volgate_can_cache;
  p.pread = volgate_pread;
  p.pwrite = volgate_pwrite;
  p.flush = volgate_flush;
  p.trim = volgate_trim;
  p.zero = volgate_zero;
  p.extents = volgate_extents;
  p.cache = volgate_cache;
  return p;
}

nbdkit_plugin plugin = make_plugin();

}  // namespace
}  // namespace volgate::gateway

// Outside any namespace: the macro defines the one symbol nbdkit looks up, plugin_init.
using volgate::gateway::plugin;
NBDKIT_REGISTER_PLUGIN(plugin)
