#include "crypto/crypto_workers.hpp"

#include <algorithm>
#include <exception>
#include <memory>

namespace volgate::crypto {

// One run(): shared with the helpers, which may still hold it after the caller has returned.
struct Batch {
  std::mutex mutex;
  std::condition_variable done;
  size_t pending = 0;
  std::exception_ptr error;

  void finished(std::exception_ptr e) {
    std::lock_guard lock(mutex);
    if (e && !error) error = e;
    if (--pending == 0) done.notify_one();
  }
};

// One queued piece of work: a share of a run(), or a submitted job.
struct CryptoWorkers::Share {
  const std::function<void(size_t, size_t)>* work;  // valid until the batch is finished
  size_t first;
  size_t count;
  std::shared_ptr<Batch> batch;
  std::function<void()> job;  // set for submit(), instead of the above
};

CryptoWorkers& CryptoWorkers::instance() {
  static CryptoWorkers workers(std::max(2u, std::thread::hardware_concurrency()) - 1);
  return workers;
}

CryptoWorkers::CryptoWorkers(unsigned helpers) {
  for (unsigned i = 0; i < helpers; ++i) threads_.emplace_back([this] { helper_loop(); });
}

CryptoWorkers::~CryptoWorkers() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void CryptoWorkers::run(size_t units, const std::function<void(size_t, size_t)>& work) {
  const size_t parts = std::min(units, threads_.size() + 1);
  if (parts <= 1) return work(0, units);
  auto batch = std::make_shared<Batch>();
  batch->pending = parts;
  const size_t per_part = units / parts;
  // The caller takes the first share (with the remainder); helpers take the others.
  const size_t own = units - per_part * (parts - 1);
  std::vector<std::unique_ptr<Share>> shares;
  for (size_t i = 0; i + 1 < parts; ++i)
    shares.push_back(std::make_unique<Share>(Share{&work, own + i * per_part, per_part, batch}));
  {
    std::lock_guard lock(mutex_);
    size_t queued = 0;
    try {
      for (auto& share : shares) {
        queue_.push_back(share.get());
        ++queued;
      }
    } catch (...) {
      queue_.erase(queue_.end() - static_cast<ptrdiff_t>(queued), queue_.end());
      throw;  // nothing of this batch is left where a helper could find it
    }
    for (auto& share : shares) share.release();  // helpers own them now
  }
  wake_.notify_all();
  std::exception_ptr error;
  try {
    work(0, own);
  } catch (...) {
    error = std::current_exception();
  }
  batch->finished(error);
  std::unique_lock lock(batch->mutex);
  batch->done.wait(lock, [&] { return batch->pending == 0; });
  if (batch->error) std::rethrow_exception(batch->error);
}

void CryptoWorkers::submit(std::function<void()> job) {
  auto share = std::make_unique<Share>(Share{nullptr, 0, 0, nullptr, std::move(job)});
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(share.get());
    share.release();
  }
  wake_.notify_one();
}

void CryptoWorkers::helper_loop() {
  for (;;) {
    std::unique_ptr<Share> share;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to do
      share.reset(queue_.front());
      queue_.pop_front();
    }
    if (share->job) {
      try {
        share->job();
      } catch (...) {
        // Jobs report their own errors; one that throws anyway must not take the helper down.
      }
      continue;
    }
    std::exception_ptr error;
    try {
      (*share->work)(share->first, share->count);
    } catch (...) {
      error = std::current_exception();
    }
    share->batch->finished(error);
  }
}

}  // namespace volgate::crypto
