#pragma once
// A volume attachment as Cinder's v3 attachment API (3.27+) records it: one host's use of a
// volume for one instance. The controller makes the volume reachable from the host (a gateway
// export) when the host sends its connector, and the volume's own status follows from its
// attachments (see status_for_attachments).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controller/domain/volume_status.hpp"

namespace volgate::controller {

enum class AttachmentStatus { reserved, attaching, attached, detaching };

std::string_view to_string(AttachmentStatus status);
std::optional<AttachmentStatus> parse_attachment_status(std::string_view text);

struct Attachment {
  std::string id;  // a random UUID
  std::string project;
  std::string volume_id;
  std::string instance_uuid;
  AttachmentStatus status = AttachmentStatus::reserved;
  bool read_only = false;   // attach_mode "ro"
  std::string connector;    // the host's connector as JSON text; empty until it is given
  std::string host;         // the connector's "host"
  std::string export_name;  // the gateway export serving it; empty until the connector is given
  std::string attached_at;  // when it was completed (ISO 8601, UTC); empty before
  std::string created_at;
  std::string updated_at;
};

// "rw" or "ro", as Cinder writes attach_mode.
inline std::string_view attach_mode(const Attachment& a) { return a.read_only ? "ro" : "rw"; }

// The gateway export that serves `volume_id` to attachments of this mode: one per volume and
// mode, shared by every attachment of that volume on this host (a multiattach volume).
std::string export_name_for(const std::string& volume_id, bool read_only);

// Whether an attachment in this state holds its export (the export must exist on the gateway).
bool holds_export(const Attachment& a);

// The volume status its attachments imply: none, available; any attached, in-use; else the
// first of detaching, attaching, reserved that one of them is in.
VolumeStatus status_for_attachments(const std::vector<Attachment>& attachments);

}  // namespace volgate::controller
