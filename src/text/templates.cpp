#include "ctok/text/templates.hpp"

#include "ctok/core/error.hpp"

namespace ctok::text {
namespace {

bool name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool name_char(char c) { return name_start(c) || (c >= '0' && c <= '9'); }

// Walks tpl; calls literal(text) and placeholder(name) in order.
template <typename Literal, typename Placeholder>
void parse(const std::string& tpl, Literal literal, Placeholder placeholder) {
  size_t i = 0;
  while (i < tpl.size()) {
    const char c = tpl[i];
    if (c == '{' && i + 1 < tpl.size() && tpl[i + 1] == '{') {
      literal("{");
      i += 2;
    } else if (c == '}' && i + 1 < tpl.size() && tpl[i + 1] == '}') {
      literal("}");
      i += 2;
    } else if (c == '{') {
      const size_t close = tpl.find('}', i + 1);
      if (close == std::string::npos)
        throw bad_input("prompt template has an unclosed '{'").found("\"" + tpl + "\"");
      const std::string name = tpl.substr(i + 1, close - i - 1);
      bool ok = !name.empty() && name_start(name[0]);
      for (char ch : name) ok = ok && name_char(ch);
      if (!ok)
        throw bad_input("prompt template has a malformed placeholder {" + name + "}")
            .expected("{name} with letters, digits or '_'")
            .found("\"" + tpl + "\"");
      placeholder(name);
      i = close + 1;
    } else if (c == '}') {
      throw bad_input("prompt template has an unmatched '}' (write '}}' for a literal brace)")
          .found("\"" + tpl + "\"");
    } else {
      const size_t next = tpl.find_first_of("{}", i);
      const size_t end = next == std::string::npos ? tpl.size() : next;
      literal(tpl.substr(i, end - i));
      i = end;
    }
  }
}

}  // namespace

std::string format_template(const std::string& tpl, const TemplateValues& values) {
  std::string out;
  parse(
      tpl, [&](const std::string& s) { out += s; },
      [&](const std::string& name) {
        const auto it = values.find(name);
        if (it == values.end()) {
          std::string known;
          for (const auto& [k, v] : values) known += (known.empty() ? "{" : ", {") + k + "}";
          throw bad_input("prompt template uses an unknown placeholder {" + name + "}")
              .expected(known.empty() ? "no placeholders" : known)
              .found("\"" + tpl + "\"");
        }
        out += it->second;
      });
  return out;
}

std::vector<std::string> template_placeholders(const std::string& tpl) {
  std::vector<std::string> names;
  parse(
      tpl, [](const std::string&) {},
      [&](const std::string& name) {
        for (const auto& n : names)
          if (n == name) return;
        names.push_back(name);
      });
  return names;
}

std::vector<std::string> fill_templates(const std::vector<std::string>& templates,
                                        const TemplateValues& values) {
  std::vector<std::string> out;
  out.reserve(templates.size());
  for (const auto& t : templates) out.push_back(format_template(t, values));
  return out;
}

const std::vector<std::string>& default_templates() {
  // Textual inversion's imagenet_templates_small, with the concept written as the
  // custom token followed by its parent word.
  static const std::vector<std::string> templates = {
      "a photo of a {token} {parent}",           "a rendering of a {token} {parent}",
      "a cropped photo of the {token} {parent}", "the photo of a {token} {parent}",
      "a photo of a clean {token} {parent}",     "a photo of a dirty {token} {parent}",
      "a dark photo of the {token} {parent}",    "a photo of my {token} {parent}",
      "a photo of the cool {token} {parent}",    "a close-up photo of a {token} {parent}",
      "a bright photo of the {token} {parent}",  "a cropped photo of a {token} {parent}",
      "a photo of the {token} {parent}",         "a good photo of the {token} {parent}",
      "a photo of one {token} {parent}",         "a close-up photo of the {token} {parent}",
      "a rendition of the {token} {parent}",     "a photo of the clean {token} {parent}",
      "a rendition of a {token} {parent}",       "a photo of a nice {token} {parent}",
      "a good photo of a {token} {parent}",      "a photo of the nice {token} {parent}",
      "a photo of the small {token} {parent}",   "a photo of the weird {token} {parent}",
      "a photo of the large {token} {parent}",   "a photo of a cool {token} {parent}",
      "a photo of a small {token} {parent}",
  };
  return templates;
}

}  // namespace ctok::text
