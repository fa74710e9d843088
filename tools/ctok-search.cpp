// ctok-search: search a catalogue store with composite queries (custom tokens + words) or
// images; top-k as results.json and an HTML contact sheet (docs/catalogue.md).
//
//   ctok-search --gallery store/ --token tokens/x.safetensors
//       --query "a photo of a <x> dress in blue" [--query ...] [--queries FILE] [--image FILE ...]
//       --top 20 [--nprobe 32] [--exact] --out results/
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>

#include "common/bundle.hpp"
#include "common/tool.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/token/load_tokens.hpp"
#include "ctok/retrieval/catalogue_search.hpp"

using namespace ctok;

namespace {

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  return tool::run_tool(argc, argv, "Search a catalogue store with composite text queries or images.", [&](CLI::App& app) {
    tool::CommonOptions common;
    tool::add_common_options(app, common, tool::kAllCommon & ~(tool::kConfig | tool::kSeed));
    std::string gallery, queries_file, out, root;
    std::vector<std::string> texts, images, token_files;
    int64_t top = 10, nprobe = 0;
    int tile = 128;
    bool exact = false, force = false, no_verify = false;
    app.add_option("--gallery", gallery, "the store (ctok-index build / merge)")->required()->type_name("STORE");
    app.add_option("--query", texts, "text query, e.g. \"a photo of a <x> dress in blue\" (repeatable)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    app.add_option("--queries", queries_file, "file with one text query per line")->type_name("FILE");
    app.add_option("--image", images, "image query (repeatable)")->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->type_name("FILE");
    app.add_option("--token", token_files, "custom token file used in the queries (repeatable)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->type_name("FILE");
    app.add_option("--top", top, "results per query")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--nprobe", nprobe, "IVF lists to visit (0: the index's default, min(nlist, 16))")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_flag("--exact", exact, "scan every feature even when the store has an IVF index");
    app.add_option("--out", out, "report folder: results.json, index.html, crops/")->required()->type_name("DIR");
    app.add_option("--root", root, "where the catalogue's images are now (default: the store's source root)")
        ->type_name("DIR");
    app.add_option("--tile", tile, "px of each crop in the sheet")->check(CLI::Range(16, 1024))->capture_default_str();
    app.add_flag("--force", force, "replace an existing report");
    app.add_flag("--no-verify", no_verify, "skip the bundle's sha256 check");
    tool::parse(app, argc, argv, common, tool::kAllCommon & ~(tool::kConfig | tool::kSeed));

    std::vector<retrieval::CatalogueQuery> queries;
    for (const auto& t : texts) queries.push_back({retrieval::CatalogueQuery::Kind::kText, t});
    if (!queries_file.empty()) {
      for (auto& q : retrieval::read_query_file(queries_file)) queries.push_back(std::move(q));
    }
    for (const auto& i : images) {
      if (!file_exists(i)) throw bad_input("query image not found").file(i).key("image");
      queries.push_back({retrieval::CatalogueQuery::Kind::kImage, i});
    }
    if (queries.empty()) throw bad_input("no query: give --query TEXT, --queries FILE or --image FILE").key("query");
    if (!out.empty() && !force && std::filesystem::exists(out) &&
        !(std::filesystem::is_directory(out) && std::filesystem::is_empty(out))) {
      throw bad_input("output exists (use --force to overwrite)").file(out).key("out");
    }

    const auto t0 = std::chrono::steady_clock::now();
    model::Bundle bundle = tool::load_bundle(common, !no_verify);
    const token::LoadedTokens tokens = token_files.empty() ? token::LoadedTokens{} : token::load_tokens(token_files, bundle);
    const retrieval::Catalogue cat = retrieval::Catalogue::open(gallery, bundle, exact);
    const double t_load = since(t0);

    const auto t1 = std::chrono::steady_clock::now();
    const torch::Tensor q = retrieval::encode_queries(bundle, queries, tokens.vectors, common.threads);
    const double t_encode = since(t1);
    const auto t2 = std::chrono::steady_clock::now();
    const retrieval::SearchResult hits = cat.search(q, top, nprobe);
    const double t_search = since(t2);

    nlohmann::json toks = nlohmann::json::array();
    for (const auto& s : tokens.sources) {
      toks.push_back({{"token", s.token}, {"path", s.path}, {"sha256", s.sha256}, {"n_vectors", s.n_vectors}});
    }
    const nlohmann::json described = cat.describe(nprobe);  // once: results.json and the log line
    retrieval::SearchReportOptions ro;
    ro.out = out;
    ro.root = root;
    ro.tile = tile;
    ro.force = force;
    ro.extra = {{"tokens", toks},
                {"gallery", described},
                {"seconds", {{"load", t_load}, {"encode", t_encode}, {"search", t_search},
                             {"search_per_query_ms", 1e3 * t_search / double(queries.size())}}}};
    retrieval::write_search_report(cat, queries, hits, ro);
    const nlohmann::json& how = described["search"];
    spdlog::info("{} queries over {} items ({}{}): search {:.2f} ms/query; report in {}/index.html", queries.size(),
                 cat.store().info().count, how["method"].get<std::string>(),
                 how["index"].is_string() ? " " + how["index"].get<std::string>() : std::string(),
                 1e3 * t_search / double(queries.size()), out);
    return 0;
  });
}
