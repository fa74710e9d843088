// The GAIR report: results.json, index.html and its PNGs (report.hpp).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "ctok/core/error.hpp"
#include "ctok/core/format.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/version.hpp"
#include "ctok/gair/report.hpp"

#include "ctok/core/html.hpp"
#include "ctok/model/schedule.hpp"

namespace ctok::gair {

namespace fs = std::filesystem;

namespace {

constexpr int kTile = 128;  // px of every tile in the report

nlohmann::json opt(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }
nlohmann::json opt(const std::optional<int64_t>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }

std::string alpha_label(double a) {
  std::ostringstream s;
  s << a;
  return s.str();
}

std::string render_png(size_t a, size_t j) { return "renders/alpha" + std::to_string(a) + "-" + std::to_string(j) + ".png"; }
std::string hit_png(size_t a, size_t k) { return "hits/alpha" + std::to_string(a) + "-" + std::to_string(k + 1) + ".png"; }
std::string concept_png(size_t j) { return "concept/" + std::to_string(j) + ".png"; }

std::string rank_text(const std::optional<int64_t>& r) { return r ? std::to_string(*r) : "-"; }

}  // namespace

nlohmann::json results_json(const GairRun& run) {
  using nlohmann::json;
  const Correction& c = run.correction;
  const model::GenerateOptions& g = run.options.generate;
  json j;
  j["format"] = "ctok-gair/1";
  j["query"] = c.query.text;
  j["prompts"] = {{"query", c.query.text}, {"attribute", c.query.attribute_prompt}, {"concept", c.query.concept_prompt}};
  json mentions = json::array();
  for (const auto& m : c.query.mentions) {
    mentions.push_back({{"list", m.list}, {"word", m.word}, {"alternatives", m.alternatives}});
  }
  j["attribute_words"] = mentions;
  j["attribute_file"] = run.attribute_file.empty() ? json(nullptr) : json(run.attribute_file);
  json token = run.token_info;
  if (!run.tokens.sources.empty()) {
    token["file"] = run.tokens.sources[0].path;
    token["sha256"] = run.tokens.sources[0].sha256;
    token["n_vectors"] = run.tokens.sources[0].n_vectors;
  }
  j["token"] = token;
  j["concept_images"] = run.concept_ids;
  j["emphasis"] = emphasis_name(c.emphasis);
  j["target"] = run.target ? json{{"pair_id", run.target->pair_id}, {"style", run.target->style},
                                  {"reason", run.target_reason}, {"gallery_items", run.correct.size()}}
                           : json(nullptr);
  json alphas = json::array();
  for (size_t i = 0; i < c.alphas.size(); ++i) {
    const AlphaResult& a = c.alphas[i];
    const AlphaSearch& s = run.search.alphas[i];
    json renders = json::array();
    for (size_t k = 0; k < a.renders.size(); ++k) renders.push_back({{"seed", a.seeds[k]}, {"png", render_png(i, k)}});
    json top = json::array();
    for (size_t k = 0; k < s.top.size(); ++k) {
      const Hit& h = s.top[k];
      const GalleryItem& it = run.gallery.items[static_cast<size_t>(h.row)];
      json box = it.box ? json{it.box->x1, it.box->y1, it.box->x2, it.box->y2} : json(nullptr);
      top.push_back({{"rank", h.rank}, {"score", h.score}, {"row", h.row}, {"id", it.id}, {"image", it.image_path},
                     {"box", box}, {"keys", it.keys}, {"correct", h.correct}, {"png", hit_png(i, k)}});
    }
    alphas.push_back({{"alpha", a.alpha},
                      {"chosen", static_cast<int>(i) == c.chosen},
                      {"renders", renders},
                      {"scores", {{"concept", a.scores.concept_}, {"attribute", opt(a.scores.attribute)},
                                  {"harmonic", opt(a.scores.harmonic)}, {"per_word", a.scores.per_mention}}},
                      {"first_true_rank", opt(s.first_true)},
                      {"top", top}});
  }
  j["alphas"] = alphas;
  j["chosen"] = {{"alpha", c.alphas[static_cast<size_t>(c.chosen)].alpha}, {"by", c.chosen_by}};
  j["rank_before"] = opt(run.search.rank_before);
  j["rank_after"] = opt(run.search.rank_after);
  j["settings"] = {{"alphas", run.options.alphas},
                   {"alpha", run.options.alpha ? json(*run.options.alpha) : json(nullptr)},
                   {"beta", run.options.beta},
                   {"top_k", run.options.top_k},
                   {"chunk", run.options.chunk},
                   {"n", g.n},
                   {"steps", g.steps},
                   {"guidance", g.guidance},
                   {"sampler", model::enum_name(g.sampler)},
                   {"eta", g.eta},
                   {"spacing", model::enum_name(g.spacing)},
                   {"seed", g.seed},
                   {"batch", g.batch},
                   {"negative", g.negative}};
  j["bundle"] = run.bundle_info;
  j["gallery"] = run.gallery.provenance;
  j["seconds"] = {{"load", run.seconds.load},           {"concept_images", run.seconds.concept_},
                  {"gallery", run.seconds.gallery},     {"render", run.seconds.render},
                  {"score", run.seconds.score},         {"retrieval", run.seconds.retrieval},
                  {"total", run.seconds.total}};
  j["ctok_version"] = version_string();
  j["created"] = utc_timestamp();
  return j;
}

namespace {

const char* kStyle = R"(
body { font: 16px/1.4 sans-serif; margin: 24px; color: #111; background: #fff; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 19px; margin: 28px 0 8px; }
table.meta td { padding: 2px 12px 2px 0; vertical-align: top; }
table.meta td:first-child { color: #555; white-space: nowrap; }
code { font-size: 15px; background: #f2f2f2; padding: 1px 4px; }
.strip { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
figure { margin: 0; text-align: center; }
figure img { width: 128px; height: 128px; image-rendering: pixelated; image-rendering: crisp-edges;
             border: 4px solid #fff; display: block; }
figure.match img { border-color: #1a9c3a; }
figcaption { font-size: 14px; margin-top: 2px; }
figure.match figcaption { color: #116b27; font-weight: bold; }
section.alpha { border: 2px solid #ddd; border-radius: 8px; padding: 10px 14px; margin: 14px 0; }
section.alpha.chosen { border: 4px solid #d97b00; background: #fff7ea; }
.badge { display: inline-block; background: #d97b00; color: #fff; font-weight: bold; border-radius: 4px;
         padding: 1px 8px; margin-left: 8px; font-size: 15px; }
.scores { font-size: 16px; margin: 4px 0 8px; }
.scores b { font-size: 17px; }
.row { display: flex; gap: 28px; flex-wrap: wrap; }
.label { font-size: 14px; color: #555; margin: 4px 0; }
.summary { font-size: 18px; margin: 8px 0; }
pre { font-size: 13px; background: #f7f7f7; padding: 8px; overflow-x: auto; }
)";

}  // namespace

void write_report(const std::string& dir, const GairRun& run, bool force) {
  check_output_dir(dir, force);
  const fs::path final_dir = fs::absolute(dir).lexically_normal();
  const fs::path tmp = final_dir.parent_path() / (final_dir.filename().string() + ".partial-" + std::to_string(getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp / "renders");
  fs::create_directories(tmp / "hits");
  fs::create_directories(tmp / "concept");
  try {
    const Correction& c = run.correction;
    const std::string e_word = c.emphasis == Emphasis::kAttribute ? "attribute words" : "concept";
    std::ostringstream h;
    h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      << "<title>GAIR: " << html_escape(c.query.text) << "</title><style>" << kStyle << "</style></head><body>\n";
    h << "<h1>GAIR report</h1>\n<table class=\"meta\">"
      << "<tr><td>query</td><td><code>" << html_escape(c.query.text) << "</code></td></tr>"
      << "<tr><td>attribute prompt (a)</td><td><code>" << html_escape(c.query.attribute_prompt) << "</code></td></tr>"
      << "<tr><td>concept prompt (c)</td><td><code>" << html_escape(c.query.concept_prompt) << "</code></td></tr>"
      << "<tr><td>token</td><td><code>" << html_escape(c.query.token) << "</code> from "
      << html_escape(run.tokens.sources.empty() ? "" : run.tokens.sources[0].path) << "</td></tr>";
    std::string words;
    for (const auto& m : c.query.mentions) words += (words.empty() ? "" : ", ") + m.word + " (" + m.list + ")";
    h << "<tr><td>attribute words</td><td>" << html_escape(words.empty() ? "none found" : words) << "</td></tr>"
      << "<tr><td>correction</td><td>q<sub>&alpha;</sub> = normalise((1 &minus; &alpha;) t(q) + &alpha; t("
      << (c.emphasis == Emphasis::kAttribute ? "a" : "c") << ")), emphasis on the " << e_word
      << (run.options.beta > 0 ? ", fused with the renders' mean feature, &beta; = " + fixed(run.options.beta, 3) : "")
      << "</td></tr>";
    if (run.target) {
      h << "<tr><td>ground truth</td><td>pair " << run.target->pair_id << ", style " << run.target->style << " ("
        << html_escape(run.target_reason) << "; " << run.correct.size() << " gallery items, outlined in green)</td></tr>";
    }
    h << "</table>\n";
    const AlphaResult& chosen = c.alphas[static_cast<size_t>(c.chosen)];
    h << "<p class=\"summary\">Chosen &alpha; = <b>" << alpha_label(chosen.alpha) << "</b> ("
      << (c.chosen_by == "auto" ? "automatic: best harmonic mean of concept and attribute fidelity"
                                : c.chosen_by == "fixed" ? "fixed by --alpha" : "no attribute score: the smallest alpha")
      << "). Rank of the first true match: <b>" << rank_text(run.search.rank_before) << "</b> before correction, <b>"
      << rank_text(run.search.rank_after) << "</b> after, of " << run.gallery.items.size() << " gallery items.</p>\n";

    h << "<h2>The concept's own images</h2>\n<div class=\"strip\">";
    for (size_t j = 0; j < run.concept_images.size(); ++j) {
      image::write_png((tmp / concept_png(j)).string(), image::square_tile(run.concept_images[j], kTile));
      h << "<figure><img src=\"" << concept_png(j) << "\" alt=\"concept image\"><figcaption>"
        << html_escape(run.concept_ids[j]) << "</figcaption></figure>";
    }
    h << "</div>\n<h2>Alpha grid: what each corrected query asks for, and what it retrieves</h2>\n";
    for (size_t i = 0; i < c.alphas.size(); ++i) {
      const AlphaResult& a = c.alphas[i];
      const AlphaSearch& s = run.search.alphas[i];
      const bool is_chosen = static_cast<int>(i) == c.chosen;
      h << "<section class=\"alpha" << (is_chosen ? " chosen" : "") << "\"><h2>&alpha; = " << alpha_label(a.alpha)
        << (is_chosen ? "<span class=\"badge\">chosen</span>" : "") << "</h2>\n<div class=\"scores\">concept fidelity <b>"
        << fixed(a.scores.concept_, 3) << "</b> &middot; attribute fidelity <b>"
        << (a.scores.attribute ? fixed(*a.scores.attribute, 3) : "-") << "</b> &middot; harmonic mean <b>"
        << (a.scores.harmonic ? fixed(*a.scores.harmonic, 3) : "-") << "</b> &middot; first true match at rank <b>"
        << rank_text(s.first_true) << "</b></div>\n<div class=\"row\"><div><div class=\"label\">rendered (seeds "
        << (a.seeds.empty() ? 0 : a.seeds.front()) << "&ndash;" << (a.seeds.empty() ? 0 : a.seeds.back())
        << ")</div><div class=\"strip\">";
      for (size_t k = 0; k < a.renders.size(); ++k) {
        image::write_png((tmp / render_png(i, k)).string(), image::square_tile(a.renders[k], kTile));
        h << "<figure><img src=\"" << render_png(i, k) << "\" alt=\"render\"><figcaption>seed " << a.seeds[k]
          << "</figcaption></figure>";
      }
      h << "</div></div><div><div class=\"label\">retrieved (top " << s.top.size() << ")</div><div class=\"strip\">";
      for (size_t k = 0; k < s.top.size(); ++k) {
        const Hit& hit = s.top[k];
        const GalleryItem& it = run.gallery.items[static_cast<size_t>(hit.row)];
        image::Image im = image::decode_file(it.image_path);
        if (it.box) im = image::crop(im, *it.box);
        image::write_png((tmp / hit_png(i, k)).string(), image::square_tile(im, kTile));
        h << "<figure" << (hit.correct ? " class=\"match\"" : "") << "><img src=\"" << hit_png(i, k) << "\" alt=\""
          << html_escape(it.id) << "\" title=\"" << html_escape(it.id) << "\"><figcaption>#" << hit.rank << " &middot; "
          << fixed(hit.score, 3) << (hit.correct ? " &#10003;" : "") << "</figcaption></figure>";
      }
      h << "</div></div></div></section>\n";
    }
    const nlohmann::json results = results_json(run);
    h << "<h2>Provenance</h2>\n<pre>"
      << html_escape(nlohmann::json({{"bundle", results["bundle"]}, {"token", results["token"]},
                                     {"gallery", results["gallery"]}, {"settings", results["settings"]},
                                     {"seconds", results["seconds"]}, {"ctok_version", results["ctok_version"]}})
                         .dump(2))
      << "</pre>\n<p class=\"label\">All data in <a href=\"results.json\">results.json</a>.</p>\n</body></html>\n";
    write_file_atomic((tmp / "results.json").string(), results.dump(2) + "\n");
    write_file_atomic((tmp / "index.html").string(), h.str());
    // Into place: the old report (with --force) goes only once the new one is complete.
    const fs::path old = final_dir.parent_path() / (final_dir.filename().string() + ".old-" + std::to_string(getpid()));
    if (fs::exists(final_dir)) fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old, ec);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace ctok::gair
