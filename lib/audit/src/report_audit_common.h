// Pieces the audit's report formats share (report_audit.cpp, report_audit_html.cpp). Not a public
// header.
#pragma once

#include <string>

#include "reprocheck/audit.h"

namespace reprocheck::audit::report_detail {

std::string kind_words(const std::string& kind);
const CellResult* find_cell(const AuditView& v, const std::string& model, const std::string& column);
std::string summary_line(const AuditView& v);
std::string shard_words(const AuditInfo& a);
std::string what_happened(const CellResult& c);

}  // namespace reprocheck::audit::report_detail
