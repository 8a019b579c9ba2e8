// The chat page served at / (chat_page.html): one static HTML + JS file, no build step and no CDN, compiled into the
// binary by embed_file.cmake (CMake writes chat_page_data.cc from it).
#pragma once

#include <string_view>

namespace longhaul::server {

// The page's bytes (UTF-8 HTML).
std::string_view chat_page_html();

}  // namespace longhaul::server
