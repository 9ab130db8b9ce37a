#include "gateway/handover_channel.hpp"

#include "common/untrusted_json.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace volgate::gateway {
namespace {

constexpr size_t kLengthBytes = 4;

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

HandoverChannel::HandoverChannel(UniqueFd socket) : socket_(std::move(socket)) {}

void HandoverChannel::wait(short events, Clock::time_point deadline, const char* what) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) throw HandoverError(std::string("hand-over: timed out ") + what);
    pollfd p{socket_.get(), events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60'000)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw HandoverError(std::string("hand-over: poll: ") + errno_text(errno));
    if (n > 0) return;  // ready, or an error/hang-up the next call reports
  }
}

void HandoverChannel::send(const control::Json& body, std::span<const int> descriptors,
                           Clock::time_point deadline) {
  if (descriptors.size() > kMaxDescriptors)
    throw std::invalid_argument("hand-over: too many descriptors in one message");
  const WipingString text = body.dump();
  if (text.size() > kMaxMessageBytes) throw std::invalid_argument("hand-over: message too large");
  WipingString frame(kLengthBytes, '\0');
  const auto length = static_cast<uint32_t>(text.size());
  for (size_t i = 0; i < kLengthBytes; ++i)
    frame[i] = static_cast<char>((length >> (8 * (kLengthBytes - 1 - i))) & 0xff);
  frame += text;

  size_t sent = 0;
  bool descriptors_sent = descriptors.empty();
  while (sent < frame.size()) {
    iovec iov{frame.data() + sent, frame.size() - sent};
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    // The descriptors go with the first bytes: the receiver takes them with the length.
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxDescriptors)]{};
    if (!descriptors_sent) {
      message.msg_control = control;
      message.msg_controllen = CMSG_SPACE(sizeof(int) * descriptors.size());
      cmsghdr* header = CMSG_FIRSTHDR(&message);
      header->cmsg_level = SOL_SOCKET;
      header->cmsg_type = SCM_RIGHTS;
      header->cmsg_len = CMSG_LEN(sizeof(int) * descriptors.size());
      std::memcpy(CMSG_DATA(header), descriptors.data(), sizeof(int) * descriptors.size());
    }
    ssize_t n = ::sendmsg(socket_.get(), &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait(POLLOUT, deadline, "sending to the other gateway process");
      continue;
    }
    if (n < 0) throw HandoverError("hand-over: sending failed: " + errno_text(errno));
    descriptors_sent = true;
    sent += static_cast<size_t>(n);
  }
}

void HandoverChannel::read_exactly(std::byte* out, size_t length, Clock::time_point deadline,
                                   std::vector<UniqueFd>* descriptors) {
  size_t done = 0;
  while (done < length) {
    iovec iov{out + done, length - done};
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxDescriptors)]{};
    if (descriptors) {
      message.msg_control = control;
      message.msg_controllen = sizeof control;
    }
    ssize_t n = ::recvmsg(socket_.get(), &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait(POLLIN, deadline, "waiting for the other gateway process");
      continue;
    }
    if (n < 0) throw HandoverError("hand-over: receiving failed: " + errno_text(errno));
    // Descriptors first: each received one is ours to close, whatever follows.
    for (cmsghdr* h = descriptors ? CMSG_FIRSTHDR(&message) : nullptr; h; h = CMSG_NXTHDR(&message, h)) {
      if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
        descriptors->emplace_back(fd);
      }
    }
    if (message.msg_flags & MSG_CTRUNC)
      throw HandoverError("hand-over: the other process sent more descriptors than a message may carry");
    if (n == 0) throw HandoverError("hand-over: the other gateway process closed the connection");
    descriptors = nullptr;  // they come with a message's first bytes only
    done += static_cast<size_t>(n);
  }
}

HandoverMessage HandoverChannel::receive(Clock::time_point deadline) {
  HandoverMessage message;
  std::byte length_bytes[kLengthBytes];
  read_exactly(length_bytes, kLengthBytes, deadline, &message.descriptors);
  uint32_t length = 0;
  for (std::byte b : length_bytes) length = (length << 8) | static_cast<uint8_t>(b);
  if (length == 0 || length > kMaxMessageBytes)
    throw HandoverError("hand-over: a message of " + std::to_string(length) +
                        " bytes (at most " + std::to_string(kMaxMessageBytes) + ")");
  WipingString text(length, '\0');
  read_exactly(reinterpret_cast<std::byte*>(text.data()), length, deadline, nullptr);
  try {
    message.body = parse_untrusted_json_as<control::Json>(std::string_view(text.data(), text.size()));
  } catch (const UntrustedJsonError& e) {
    throw HandoverError(std::string("hand-over: a malformed message: ") + e.what());
  }
  if (!message.body.is_object()) throw HandoverError("hand-over: a message that is not a JSON object");
  return message;
}

}  // namespace volgate::gateway
