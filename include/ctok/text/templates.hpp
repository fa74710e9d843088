// Prompt templates: "{name}" placeholders filled from a map, as in textual inversion's
// "a photo of a {}" lists.
//
//   std::string p = ctok::text::format_template("a photo of a {token} {parent}",
//                                                {{"token", "<my-dress>"}, {"parent", "dress"}});
//   // "a photo of a <my-dress> dress"
//   auto prompts = ctok::text::fill_templates(ctok::text::default_templates(),
//                                             {{"token", "<my-dress>"}, {"parent", "dress"}});
#pragma once

#include <map>
#include <string>
#include <vector>

namespace ctok::text {

using TemplateValues = std::map<std::string, std::string>;

// Replaces each {name} (name: letters, digits, '_', not starting with a digit) with its
// value; "{{" and "}}" stand for literal braces. Throws bad_input naming the template for
// an unknown placeholder (listing the known ones), an empty or malformed one, or an
// unmatched brace. Values that are given but not used are fine.
std::string format_template(const std::string& tpl, const TemplateValues& values);

// The placeholder names used by tpl, in order of first use (bad_input if malformed).
std::vector<std::string> template_placeholders(const std::string& tpl);

// format_template over a list.
std::vector<std::string> fill_templates(const std::vector<std::string>& templates,
                                        const TemplateValues& values);

// Textual-inversion-like templates ("a photo of a {token} {parent}", ...), 27 of them,
// using {token} and {parent}.
const std::vector<std::string>& default_templates();

}  // namespace ctok::text
