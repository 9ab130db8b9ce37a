#include "controller/api/attachment_view.hpp"

#include "controller/api/request_parsing.hpp"

namespace volgate::controller {

using nlohmann::json;

namespace {
json null_if_empty(const std::string& text) { return text.empty() ? json(nullptr) : json(text); }
}  // namespace

json attachment_summary(const Attachment& a) {
  return {{"id", a.id}, {"status", to_string(a.status)}, {"instance", null_if_empty(a.instance_uuid)},
          {"volume_id", a.volume_id}};
}

json connection_info(VolumeService& service, const Attachment& a) {
  if (a.export_name.empty()) return nullptr;
  auto volume = service.find_volume(a.volume_id);
  return {{"driver_volume_type", "nbd"},
          {"data",
           {{"socket", service.nbd_socket()},
            {"export", a.export_name},
            {"encrypted", volume && volume->encrypted},
            {"volume_id", a.volume_id},
            {"access_mode", attach_mode(a)}}}};
}

json attachment_detail(VolumeService& service, const Attachment& a) {
  json j = attachment_summary(a);
  j["attached_at"] = null_if_empty(a.attached_at);
  j["detached_at"] = nullptr;
  j["attach_mode"] = attach_mode(a);
  j["connection_info"] = connection_info(service, a);
  // The connector was parsed (and bounded) when it came in; what is stored is valid JSON.
  json connector = a.connector.empty() ? json(nullptr) : json::parse(a.connector, nullptr, false);
  j["connector"] = connector.is_discarded() ? json(nullptr) : connector;
  return j;
}

json volume_attachments_view(VolumeService& service, const Volume& v) {
  json list = json::array();
  if (v.status == VolumeStatus::available || v.status == VolumeStatus::creating) return list;
  for (const auto& a : service.attachments_of(v.id)) {
    if (a.status != AttachmentStatus::attached && a.status != AttachmentStatus::detaching) continue;
    list.push_back({{"id", v.id},
                    {"attachment_id", a.id},
                    {"volume_id", v.id},
                    {"server_id", null_if_empty(a.instance_uuid)},
                    {"host_name", null_if_empty(a.host)},
                    {"device", nullptr},
                    {"attached_at", null_if_empty(a.attached_at)}});
  }
  return list;
}

}  // namespace volgate::controller
