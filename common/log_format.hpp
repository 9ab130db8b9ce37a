#pragma once
// The format of volgate's log lines, with every message escaped onto one line.
//
// Log messages carry text from outside: names and image references from API clients, errors
// from storage and from other programs. A line break in such text would let a client append a
// well-formed line of its own ("... info GET ... (admin of default): 200") to a log that
// operators read to see who did what; other control characters can rewrite a terminal. So
// every message is written with its ASCII control characters escaped (a line break as \n,
// others as \xHH), whatever put them there. (Bytes of 0x80 and up pass: UTF-8 names stay
// readable.)
#include <memory>
#include <string>

#include <spdlog/formatter.h>

namespace volgate {

// The pattern's `%*` is the escaped message (use it where spdlog's `%v` would go).
std::unique_ptr<spdlog::formatter> make_log_formatter(std::string pattern);

}  // namespace volgate
