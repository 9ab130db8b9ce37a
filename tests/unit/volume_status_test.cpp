// The volume and snapshot state machines: Cinder's names, and the transitions flows rely on.
#include <gtest/gtest.h>

#include "controller/domain/volume_status.hpp"

namespace volgate::controller {
namespace {

using enum VolumeStatus;

TEST(VolumeStatus, NamesAreCindersAndRoundTrip) {
  EXPECT_EQ(to_string(in_use), "in-use");
  EXPECT_EQ(to_string(error_deleting), "error_deleting");
  for (auto s : {creating, available, reserved, attaching, in_use, detaching, extending, uploading, deleting, error,
                 error_deleting})
    EXPECT_EQ(parse_volume_status(to_string(s)), s);
  EXPECT_FALSE(parse_volume_status("in_use"));
  EXPECT_FALSE(parse_volume_status(""));
}

TEST(VolumeStatus, LifecycleTransitionsAreAllowed) {
  EXPECT_TRUE(allowed(creating, available));
  EXPECT_TRUE(allowed(creating, error));
  EXPECT_TRUE(allowed(available, extending));
  EXPECT_TRUE(allowed(extending, available));
  EXPECT_TRUE(allowed(available, deleting));
  EXPECT_TRUE(allowed(error, deleting));
  EXPECT_TRUE(allowed(error_deleting, deleting));
  EXPECT_TRUE(allowed(deleting, error_deleting));
  EXPECT_TRUE(allowed(available, reserved));
  EXPECT_TRUE(allowed(reserved, attaching));
  EXPECT_TRUE(allowed(attaching, in_use));
  EXPECT_TRUE(allowed(in_use, detaching));
  EXPECT_TRUE(allowed(detaching, available));
  EXPECT_TRUE(allowed(detaching, in_use));  // a failed detach rolls back
  EXPECT_TRUE(allowed(available, uploading));
  EXPECT_TRUE(allowed(in_use, uploading));  // os-volume_upload_image with force
  EXPECT_TRUE(allowed(uploading, available));
  EXPECT_TRUE(allowed(uploading, in_use));
}

TEST(VolumeStatus, IllegalTransitionsAreRefused) {
  EXPECT_FALSE(allowed(creating, extending));
  EXPECT_FALSE(allowed(deleting, available));  // a delete never comes back
  EXPECT_FALSE(allowed(deleting, deleting));
  EXPECT_FALSE(allowed(extending, deleting));
  EXPECT_FALSE(allowed(uploading, deleting));  // not while its data is being read
  EXPECT_FALSE(allowed(uploading, detaching));
  EXPECT_FALSE(allowed(uploading, extending));
  EXPECT_FALSE(allowed(in_use, deleting));     // detach first
  EXPECT_FALSE(allowed(error, extending));
  EXPECT_FALSE(allowed(available, in_use));    // only through attaching
  EXPECT_FALSE(allowed(error_deleting, available));
  EXPECT_THROW(require_transition("volume x", in_use, deleting), IllegalTransition);
  try {
    require_transition("volume x", extending, deleting);
    FAIL();
  } catch (const IllegalTransition& e) {
    EXPECT_STREQ(e.what(), "volume x is extending; it cannot become deleting");
  }
}

TEST(SnapshotStatus, Transitions) {
  EXPECT_TRUE(allowed(SnapshotStatus::creating, SnapshotStatus::available));
  EXPECT_TRUE(allowed(SnapshotStatus::available, SnapshotStatus::deleting));
  EXPECT_TRUE(allowed(SnapshotStatus::error, SnapshotStatus::deleting));
  EXPECT_FALSE(allowed(SnapshotStatus::creating, SnapshotStatus::deleting));
  EXPECT_FALSE(allowed(SnapshotStatus::deleting, SnapshotStatus::available));
  EXPECT_EQ(parse_snapshot_status("error_deleting"), SnapshotStatus::error_deleting);
}

}  // namespace
}  // namespace volgate::controller
