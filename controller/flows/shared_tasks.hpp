#pragma once
// Tasks that several flows share, written once: reserving and committing quota, and marking a
// volume or snapshot `deleting`. Each expects the fields it names in the flow's context.
#include <functional>
#include <optional>
#include <string>
#include <type_traits>

#include "controller/domain/quota.hpp"
#include "controller/domain/snapshot.hpp"
#include "controller/domain/volume.hpp"
#include "controller/domain/volume_status.hpp"
#include "controller/flows/flow.hpp"
#include "controller/flows/flow_services.hpp"

namespace volgate::controller {

// Reserves `deltas` for `c.project` under `c.reservation` (a new id kept in the context, so a
// revert or a resumed flow finds the same reservation). Revert: the reservation goes.
template <class Context>
Task<Context> reserve_quota_task(FlowServices& s, std::function<QuotaDeltas(const Context&)> deltas) {
  return {"reserve_quota",
          [&s, deltas](Context& c) {
            if (c.reservation.empty()) c.reservation = new_uuid();
            s.store.reserve_quota(c.reservation, c.project, deltas(c), s.config.default_quotas);
          },
          [&s](Context& c) {
            if (!c.reservation.empty()) s.store.rollback_quota(c.reservation);
          }};
}

// Turns the reservation into usage held by the resource `c.*holder`. Revert: back to reserved.
template <class Context>
Task<Context> commit_quota_task(FlowServices& s, std::string Context::*holder) {
  return {"commit_quota", [&s, holder](Context& c) { s.store.commit_quota(c.reservation, c.*holder); },
          [&s](Context& c) {
            if (!c.reservation.empty()) s.store.uncommit_quota(c.reservation);
          }};
}

// How mark_deleting_task reaches volumes and snapshots.
template <class Resource>
struct DeletableRows;

template <>
struct DeletableRows<Volume> {
  using Status = VolumeStatus;
  static constexpr const char* noun = "volume";
  static constexpr Status deleting = VolumeStatus::deleting, error_deleting = VolumeStatus::error_deleting;
  static bool exists(Store& store, const std::string& id) { return store.find_volume(id).has_value(); }
  static void update(Store& store, const std::string& id, const std::function<void(Volume&)>& change) {
    store.update_volume(id, change);
  }
  static std::optional<Status> parse(const std::string& text) { return parse_volume_status(text); }
};

template <>
struct DeletableRows<Snapshot> {
  using Status = SnapshotStatus;
  static constexpr const char* noun = "snapshot";
  static constexpr Status deleting = SnapshotStatus::deleting, error_deleting = SnapshotStatus::error_deleting;
  static bool exists(Store& store, const std::string& id) { return store.find_snapshot(id).has_value(); }
  static void update(Store& store, const std::string& id, const std::function<void(Snapshot&)>& change) {
    store.update_snapshot(id, change);
  }
  static std::optional<Status> parse(const std::string& text) { return parse_snapshot_status(text); }
};

// Marks the resource `c.*id` deleting, where its state allows it (in any state with `c.force`,
// an admin's force-delete, whose `recheck` makes sure no other operation works on it),
// remembering the status it had in `c.status_before`; then `recheck` looks for work that raced
// past validate (a new snapshot or copy of it) and throws to refuse the delete. Revert: a
// delete refused before the caller was answered leaves the status it found (only if this flow
// marked it: a racing delete's `deleting` is not ours to undo); one that failed later leaves
// `error_deleting` with the reason, for a retry.
template <class Resource, class Context>
Task<Context> mark_deleting_task(FlowServices& s, std::string Context::*id,
                                 std::type_identity_t<std::function<void(const Context&)>> recheck) {
  using Rows = DeletableRows<Resource>;
  return {"mark_deleting",
          [&s, id, recheck](Context& c) {
            Rows::update(s.store, c.*id, [&](Resource& r) {
              if (r.status == Rows::deleting && c.outcome.accepted) return;  // resumed after a restart
              if (!c.force) require_transition(std::string(Rows::noun) + " " + c.*id, r.status, Rows::deleting);
              c.status_before = std::string(to_string(r.status));
              r.status = Rows::deleting;
            });
            recheck(c);
          },
          [&s, id](Context& c) {
            if (!Rows::exists(s.store, c.*id)) return;
            Rows::update(s.store, c.*id, [&](Resource& r) {
              if (r.status != Rows::deleting) return;
              if (!c.outcome.accepted) {
                if (auto before = Rows::parse(c.status_before)) r.status = *before;
                return;
              }
              r.status = Rows::error_deleting;
              r.error_message = "delete failed: " + c.outcome.error;
            });
          }};
}

}  // namespace volgate::controller
