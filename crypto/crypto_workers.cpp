#include "crypto/crypto_workers.hpp"

#include <unistd.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <new>

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

// One helper's share of a run(); it deletes itself once done.
struct CryptoWorkers::Share final : CryptoWorkers::Job {
  Share(const std::function<void(size_t, size_t)>& work, size_t first, size_t count,
        std::shared_ptr<Batch> batch)
      : work(work), first(first), count(count), batch(std::move(batch)) {}

  void run() noexcept override {
    std::exception_ptr error;
    try {
      work(first, count);
    } catch (...) {
      error = std::current_exception();
    }
    batch->finished(error);
    delete this;
  }

  const std::function<void(size_t, size_t)>& work;  // valid until the batch is finished
  size_t first;
  size_t count;
  std::shared_ptr<Batch> batch;
};

namespace {
std::atomic<CryptoWorkers*> started_instance{nullptr};  // instance(), once it exists
}  // namespace

CryptoWorkers& CryptoWorkers::instance() {
  static CryptoWorkers& workers = []() -> CryptoWorkers& {
    static CryptoWorkers made(std::max(2u, std::thread::hardware_concurrency()) - 1);
    started_instance.store(&made);
    return made;
  }();
  return workers;
}

void CryptoWorkers::after_fork() {
  CryptoWorkers* workers = started_instance.load();
  if (workers && workers->owner_pid_ != ::getpid()) workers->restart_in_forked_child();
}

CryptoWorkers::CryptoWorkers(unsigned helpers) : helpers_(helpers), owner_pid_(::getpid()) { start_helpers(); }

void CryptoWorkers::start_helpers() {
  for (unsigned i = 0; i < helpers_; ++i) threads_.emplace_back([this] { helper_loop(); });
}

void CryptoWorkers::restart_in_forked_child() {
  // The copied thread objects name threads of the parent: each is replaced by an empty one
  // without its destructor (which would end the process for a joinable thread), and the lock
  // and condition variable are made anew (the parent's waiters are not in this process).
  for (auto& t : threads_) new (&t) std::thread();
  threads_.clear();
  new (&mutex_) std::mutex();
  new (&wake_) std::condition_variable();
  head_ = tail_ = nullptr;
  stopping_ = false;
  owner_pid_ = ::getpid();
  start_helpers();
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
    shares.push_back(std::make_unique<Share>(work, own + i * per_part, per_part, batch));
  {
    std::lock_guard lock(mutex_);
    for (auto& share : shares) push(share.release());  // helpers own them now
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

void CryptoWorkers::submit(Job& job) noexcept {
  {
    std::lock_guard lock(mutex_);
    push(&job);
  }
  wake_.notify_one();
}

void CryptoWorkers::push(Job* job) {
  job->next_ = nullptr;
  (tail_ ? tail_->next_ : head_) = job;
  tail_ = job;
}

CryptoWorkers::Job* CryptoWorkers::pop() {
  Job* job = head_;
  head_ = job->next_;
  if (!head_) tail_ = nullptr;
  return job;
}

void CryptoWorkers::helper_loop() {
  for (;;) {
    Job* job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || head_; });
      if (!head_) return;  // stopping, and nothing left to do
      job = pop();
    }
    job->run();
  }
}

}  // namespace volgate::crypto
