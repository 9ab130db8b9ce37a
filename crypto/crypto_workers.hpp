#pragma once
// Helper threads for the cipher work of large requests, so AES runs on other cores than the
// I/O threads: submit() hands a whole job over and returns (crypto/helper_hand_off.hpp brings
// its outcome back to the I/O thread); run() splits one job into shares, does one itself and
// waits for the rest.
//
// Helpers run cipher work and, with it, copies to and from the page cache that wait for no
// device and no I/O thread (BlockDevice::read_cached/write_cached); they never call run()
// themselves. So a job always finishes without help from the thread waiting for it, and
// waiting for helpers cannot deadlock.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace volgate::crypto {

class CryptoWorkers {
 public:
  // A unit of work for a helper, queued without allocating: the job itself is the queue's
  // link. It must stay alive until a helper has called run(), where it may end.
  class Job {
   public:
    // On a helper thread. Must not call CryptoWorkers::run() (a helper waiting for helpers
    // could wait forever).
    virtual void run() noexcept = 0;

   protected:
    ~Job() = default;

   private:
    friend class CryptoWorkers;
    Job* next_ = nullptr;
  };

  // The process-wide set: one helper per core beyond the first (at least one).
  static CryptoWorkers& instance();
  // For a process that may fork after the set started (nbdkit goes into the background, or
  // forks its --run command, after the plugin opened a LUKS volume): call it in the child
  // before any cipher work. A child has the set's memory but none of its threads, so work
  // handed to them would never be done, and the exit would wait to join threads that are not
  // there. There the set starts anew; elsewhere (no fork, or the set never started) it does
  // nothing. No request may be in flight at the fork.
  static void after_fork();

  explicit CryptoWorkers(unsigned helpers);
  ~CryptoWorkers();
  CryptoWorkers(const CryptoWorkers&) = delete;
  CryptoWorkers& operator=(const CryptoWorkers&) = delete;

  // Calls work(first, count) over [0, units) in contiguous shares, one per helper plus one on
  // the calling thread, and returns once all are done. Exceptions from a share are rethrown.
  void run(size_t units, const std::function<void(size_t first, size_t count)>& work);

  // Has a helper call job.run() and returns at once.
  void submit(Job& job) noexcept;

 private:
  struct Share;
  void helper_loop();
  void push(Job* job);  // with mutex_ held
  Job* pop();           // with mutex_ held, the queue not empty
  void start_helpers();
  void restart_in_forked_child();

  const unsigned helpers_;
  pid_t owner_pid_;  // the process whose threads threads_ holds
  std::mutex mutex_;
  std::condition_variable wake_;
  Job* head_ = nullptr;  // first out
  Job* tail_ = nullptr;  // last in
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace volgate::crypto
