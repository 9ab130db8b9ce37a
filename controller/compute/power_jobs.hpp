#pragma once
// Power actions that outlive the request that asked for them: Nova answers os-stop with 202 and
// shuts the guest down afterwards, which may take its whole graceful timeout. Each job gets its
// own thread (a slow shutdown of one server does not hold up another's); every job is bounded,
// so waiting for them at stop is too.
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

namespace volgate::controller {

class PowerJobs {
 public:
  PowerJobs() = default;
  ~PowerJobs() { wait_all(); }
  PowerJobs(const PowerJobs&) = delete;
  PowerJobs& operator=(const PowerJobs&) = delete;

  // Runs `job` on a thread of its own. It must catch what it throws.
  void run(std::function<void()> job);
  // Waits until every job has ended.
  void wait_all();

 private:
  struct Job {
    std::thread thread;
    std::shared_ptr<bool> done;  // set by the job's thread, under mutex_
  };
  void reap_locked();

  std::mutex mutex_;
  std::list<Job> jobs_;
};

}  // namespace volgate::controller
