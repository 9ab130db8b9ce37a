// iSCSI names: what the config accepts as an initiator name, and the one a host gets by default.
#include <gtest/gtest.h>

#include "controller/pools/iscsi_name.hpp"

namespace volgate::controller {
namespace {

TEST(IscsiName, NormalisedNamesPass) {
  for (const char* name : {"iqn.2026-11.org.volgate", "iqn.2026-11.org.volgate:host-0123456789abcdef",
                           "iqn.1992-01.com.example:storage:diskarrays-sn-a8675309", "iqn.2001-04.com.example",
                           "iqn.2026-11.org.volgate.test12:gw.1-a", "eui.02004567A425678D",
                           "naa.52004567BA64678D", "naa.62004567BA64678D0123456789ABCDEF"})
    EXPECT_EQ(iscsi_name_problem(name), "") << name;
}

TEST(IscsiName, EachMistakeIsNamed) {
  EXPECT_NE(iscsi_name_problem("host1").find("expected iqn.YYYY-MM"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-11.org.Volgate:h").find("lowercase"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-11.org.volgate:h_1").find("lowercase"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-1.org.volgate").find("iqn.YYYY-MM."), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-00.org.volgate").find("01-12"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-11.").find("no naming authority"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-11..org").find("not a reversed domain name"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-11.org.-x:y").find("not a reversed domain name"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-11.org.volgate:").find("nothing after the ':'"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("eui.0200").find("16 hex digits"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("naa.52004567BA64678").find("16 or 32 hex digits"), std::string::npos);
  EXPECT_NE(iscsi_name_problem("iqn.2026-11.org.volgate:" + std::string(200, 'a')).find("longer than 223"),
            std::string::npos);
}

TEST(IscsiName, TheDefaultIsStablePerHostAndHidesTheMachineId) {
  const std::string a = initiator_name_for_host("3d1219c7c4c5404aaa1f6d2a48adfda4");
  EXPECT_EQ(a, initiator_name_for_host("3d1219c7c4c5404aaa1f6d2a48adfda4"));
  EXPECT_NE(a, initiator_name_for_host("3d1219c7c4c5404aaa1f6d2a48adfda5"));
  EXPECT_TRUE(a.starts_with("iqn.2026-11.org.volgate:host-")) << a;
  EXPECT_EQ(a.size(), std::string("iqn.2026-11.org.volgate:host-").size() + 16);
  EXPECT_EQ(a.find("3d1219c7"), std::string::npos);
  EXPECT_EQ(iscsi_name_problem(a), "");
  EXPECT_EQ(default_initiator_name(), default_initiator_name());
  EXPECT_EQ(iscsi_name_problem(default_initiator_name()), "");
}

}  // namespace
}  // namespace volgate::controller
