# Turns a file into a C++ source that holds its bytes, so the binary serves the chat page without reading files at
# run time and without a build step of its own:
#   cmake -DINPUT=chat_page.html -DOUTPUT=chat_page_data.cc -DFUNCTION=chat_page_html -P embed_file.cmake
# The source defines `std::string_view longhaul::server::FUNCTION()`.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR n_bytes "${n_hex} / 2")
# Sixteen bytes per line.
set(lines "")
set(at 0)
while(at LESS n_hex)
  string(SUBSTRING "${hex}" ${at} 32 chunk)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," chunk "${chunk}")
  string(APPEND lines "    ${chunk}\n")
  math(EXPR at "${at} + 32")
endwhile()
file(WRITE "${OUTPUT}"
  "// Generated from ${INPUT} by embed_file.cmake; do not edit.\n"
  "#include <string_view>\n\n"
  "namespace longhaul::server {\n\n"
  "std::string_view ${FUNCTION}() {\n"
  "  static constexpr unsigned char kBytes[] = {\n${lines}    0};\n"
  "  return std::string_view(reinterpret_cast<const char*>(kBytes), ${n_bytes});\n"
  "}\n\n"
  "}  // namespace longhaul::server\n")
