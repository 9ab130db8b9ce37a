#pragma once
// The one thread a network device (iSCSI multipath, NBD upstream) keeps its sockets on.
#include <boost/asio/io_context.hpp>
#include <thread>

namespace volgate::backends {

// Starts a thread named `name` that runs `io` as its current io_context (NBD sessions on the
// device's exports run there too, through home_context(), and their device calls must find it
// as the caller's) until `io` runs out of work. SIGPIPE is blocked on it: the libraries write
// with send/writev, and a write to a peer that has gone must fail with EPIPE (a lost path or
// connection), not kill the process.
std::thread start_network_device_thread(boost::asio::io_context& io, const char* name);

}  // namespace volgate::backends
