#include "controller/flows/extend_volume.hpp"

#include "controller/api/api_error.hpp"
#include "controller/flows/shared_tasks.hpp"

namespace volgate::controller {
namespace {

using Context = ExtendVolumeContext;

// The status an extend returns its volume to (journals from before the field say available).
VolumeStatus status_before_extend(const Context& c) {
  return parse_volume_status(c.status_before).value_or(VolumeStatus::available);
}

}  // namespace

std::vector<Task<Context>> ExtendVolumeFlow::tasks(FlowServices& s) {
  std::vector<Task<Context>> tasks;
  tasks.push_back({"validate", [&s](Context& c) {
    Volume v = s.get_volume(c.project, c.volume_id);
    if (c.new_size_gb <= v.size_gb)
      bad_request("New size for extend must be greater than current size. (current: " + std::to_string(v.size_gb) +
                  ", extended: " + std::to_string(c.new_size_gb) + ").");
    if (auto attachments = s.store.attachments_of(v.id); !attachments.empty())
      conflict("Volume " + v.id + " has " + std::to_string(attachments.size()) +
               " attachment(s): an attached volume cannot be extended, since QEMU's NBD client does not see an "
               "export grow. Detach it, extend it, attach it again.");
    require_transition("volume " + v.id, v.status, VolumeStatus::extending);
    c.status_before = std::string(to_string(v.status));
    c.old_size_gb = v.size_gb;
    c.pool = v.pool;
  }, {}});

  tasks.push_back(reserve_quota_task<Context>(s, [](const Context& c) {
    return QuotaDeltas{{kQuotaGigabytes, static_cast<int64_t>(c.new_size_gb) - static_cast<int64_t>(c.old_size_gb)}};
  }));

  tasks.push_back({"mark_extending", [&s](Context& c) {
    s.store.update_volume(c.volume_id, [&](Volume& v) {
      // Refuses a second extend racing this one past validate, and this one if another
      // finished meanwhile (the quota reserved here counts from the size validate saw).
      require_transition("volume " + c.volume_id, v.status, VolumeStatus::extending);
      if (v.size_gb != c.old_size_gb)
        conflict("Volume " + c.volume_id + " was extended to " + std::to_string(v.size_gb) + " GiB meanwhile.");
      v.status = VolumeStatus::extending;
    });
    c.marked = true;  // from here on `extending` is this flow's to undo
  }, [&s](Context& c) {
    if (!c.marked) return;  // another flow's `extending`, or none
    s.store.update_volume(c.volume_id, [&](Volume& v) {
      if (v.status != VolumeStatus::extending) return;
      v.status = status_before_extend(c);
      v.error_message = c.outcome.accepted ? "extend failed: " + c.outcome.error : std::string();
    });
  }});

  // ---- the caller has its answer; the rest runs in the background

  tasks.push_back({"extend_on_pool", [&s](Context& c) {
    s.pool(c.pool).resize_volume(c.volume_id, c.new_size_gb * kGiB);
  }, [&s](Context& c) {
    // Nobody has seen the new blocks yet (the volume was `extending`), so it is safe to take
    // them back, which keeps the file's size equal to the size the database records.
    Pool& p = s.pool(c.pool);
    if (p.volume_exists(c.volume_id)) p.resize_volume(c.volume_id, c.old_size_gb * kGiB);
  }});

  tasks.push_back(commit_quota_task(s, &Context::volume_id));

  tasks.push_back({"finish", [&s](Context& c) {
    s.store.update_volume(c.volume_id, [&](Volume& v) {
      if (v.status != VolumeStatus::extending) return;  // run again by recovery: already done
      v.status = status_before_extend(c);
      v.size_gb = c.new_size_gb;
      v.error_message.clear();
    });
  }, {}});
  return tasks;
}

}  // namespace volgate::controller
