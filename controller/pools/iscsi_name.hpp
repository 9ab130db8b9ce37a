#pragma once
// iSCSI names (RFC 3720, section 3.2.6) as the controller handles them: the check applied to a
// configured initiator name, and the name this host's gateway logs in with when none is
// configured.
#include <string>
#include <string_view>

namespace volgate::controller {

// Empty when `name` is an iSCSI name in its normal form: iqn.YYYY-MM.reversed.domain[:anything]
// in lowercase letters, digits, '-', '.' and ':' (tgtd compares names byte for byte, so a name
// that is not normalised would be refused for a spelling of itself), or eui. or naa. followed
// by hex digits. Otherwise, what is wrong with it.
std::string iscsi_name_problem(std::string_view name);

// iqn.2026-11.org.volgate:host-<16 hex digits>: an HMAC-SHA256 of a fixed label keyed with
// `host_identity`. Keyed so that the machine id it is made from is not disclosed by a name
// every initiator sends in clear (machine-id(5) asks for exactly that).
std::string initiator_name_for_host(std::string_view host_identity);

// initiator_name_for_host(/etc/machine-id), or of the host name on a system without a machine
// id: the same in every run of the controller on this host, and different on every other.
std::string default_initiator_name();

}  // namespace volgate::controller
