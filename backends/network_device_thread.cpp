#include "backends/network_device_thread.hpp"

#include <pthread.h>
#include <signal.h>

#include "common/current_context.hpp"

namespace volgate::backends {

std::thread start_network_device_thread(boost::asio::io_context& io, const char* name) {
  return std::thread([&io, name] {
    pthread_setname_np(pthread_self(), name);
    // Blocked on this thread, where the device's sockets live, the signal stays pending and the
    // write fails with EPIPE.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    CurrentContextGuard current(io);
    io.run();
  });
}

}  // namespace volgate::backends
