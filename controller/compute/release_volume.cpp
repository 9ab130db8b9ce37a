#include "controller/compute/release_volume.hpp"

#include "controller/compute/detach_tasks.hpp"

namespace volgate::controller {

std::vector<Task<ReleaseVolumeContext>> ReleaseVolumeFlow::tasks(ComputeServices& s) {
  using Context = ReleaseVolumeContext;
  std::vector<Task<Context>> tasks;
  // A revert puts the volume back as it was: the next reconcile (an event, a reconnection, a
  // restart) tries again.
  tasks.push_back(begin_detaching_task<Context>(s));
  tasks.push_back(delete_attachment_task<Context>(s));
  tasks.push_back(destroy_mapping_task<Context>(s));
  return tasks;
}

}  // namespace volgate::controller
