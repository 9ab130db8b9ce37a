#pragma once
// How attachments appear in answers: Cinder's attachment views, the connection info a host
// uses to reach the volume, and the attachment list inside a volume.
#include <nlohmann/json.hpp>

#include "controller/domain/attachment.hpp"
#include "controller/volume_service.hpp"

namespace volgate::controller {

// {"id", "status", "instance", "volume_id"}
nlohmann::json attachment_summary(const Attachment& a);
// The summary and attached_at, detached_at, attach_mode, connector and connection_info.
nlohmann::json attachment_detail(VolumeService& service, const Attachment& a);
// {"driver_volume_type": "nbd", "data": {"socket", "export", "encrypted", "volume_id",
// "access_mode"}}; null until the attachment has a connector. `encrypted` says whether the
// gateway decrypts the volume: the host sees plain data either way.
nlohmann::json connection_info(VolumeService& service, const Attachment& a);
// The "attachments" of a volume's view: its attached attachments in Cinder's shape.
nlohmann::json volume_attachments_view(VolumeService& service, const Volume& v);

}  // namespace volgate::controller
