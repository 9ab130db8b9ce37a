#pragma once
// Helper threads for the cipher work of large requests, so AES runs on other cores than the
// I/O threads: submit() hands a whole job over and returns (LuksDevice posts the result back to
// its io_context); run() splits one job into shares, does one itself and waits for the rest.
//
// Helpers run cipher work and, with it, copies to and from the page cache that wait for no
// device and no I/O thread (BlockDevice::read_cached/write_cached); they never call run()
// themselves. So a job always finishes without help from the thread waiting for it, and
// waiting for helpers cannot deadlock.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace volgate::crypto {

class CryptoWorkers {
 public:
  // The process-wide set: one helper per core beyond the first (at least one).
  static CryptoWorkers& instance();

  explicit CryptoWorkers(unsigned helpers);
  ~CryptoWorkers();
  CryptoWorkers(const CryptoWorkers&) = delete;
  CryptoWorkers& operator=(const CryptoWorkers&) = delete;

  // Calls work(first, count) over [0, units) in contiguous shares, one per helper plus one on
  // the calling thread, and returns once all are done. Exceptions from a share are rethrown.
  void run(size_t units, const std::function<void(size_t first, size_t count)>& work);

  // Runs `job` on a helper thread and returns at once. The job must not throw and must not call
  // run() (a helper waiting for helpers could wait forever).
  void submit(std::function<void()> job);

 private:
  struct Share;
  void helper_loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Share*> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace volgate::crypto
