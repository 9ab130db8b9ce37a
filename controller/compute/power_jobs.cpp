#include "controller/compute/power_jobs.hpp"

namespace volgate::controller {

void PowerJobs::run(std::function<void()> job) {
  std::lock_guard lock(mutex_);
  reap_locked();
  auto done = std::make_shared<bool>(false);
  jobs_.push_back({std::thread([this, job = std::move(job), done] {
                     job();
                     std::lock_guard lock(mutex_);
                     *done = true;
                   }),
                   done});
}

void PowerJobs::reap_locked() {
  // A finished job's thread is past its last use of mutex_ once done is set and the lock is
  // released; joining it here returns at once.
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (*it->done) {
      it->thread.join();
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
}

void PowerJobs::wait_all() {
  std::list<Job> jobs;
  {
    std::lock_guard lock(mutex_);
    jobs.swap(jobs_);
  }
  for (auto& j : jobs) j.thread.join();
}

}  // namespace volgate::controller
