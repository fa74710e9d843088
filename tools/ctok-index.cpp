// ctok-index: a user's catalogue as a gallery store with a FAISS index (docs/catalogue.md).
//
//   ctok-index build --images shop/ --out store/                      # embed + exact index
//   ctok-index build --list items.txt --shard 3/8 --out store-3/      # one of 8 machines
//   ctok-index merge --out store/ --index ivf:4096 store-0/ ... store-7/
//   ctok-index index store/ --index ivf:1024,pq:32                     # (re)build the index
//   ctok-index info store/ [--verify] [--json]
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "common/bundle.hpp"
#include "common/tool.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/retrieval/catalogue.hpp"
#include "ctok/retrieval/faiss_index.hpp"

using namespace ctok;

namespace {

struct IndexFlags {
  std::string spec = "flat";
  int64_t train_sample = 0;
};

void add_index_flags(CLI::App* app, IndexFlags& f, const std::string& what) {
  app->add_option("--index", f.spec, what + ": flat (exact), ivf:NLIST, ivf:NLIST,pq:M, or none")->capture_default_str();
  app->add_option("--train-sample", f.train_sample, "IVF training rows (0: min(64 x NLIST, 262144), >= 39 x NLIST)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
}

void make_index(const std::string& dir, const IndexFlags& f, uint64_t seed, bool progress) {
  if (f.spec == "none") return;
  retrieval::IndexBuildOptions io;
  io.spec = retrieval::parse_index_spec(f.spec);
  io.train_sample = f.train_sample;
  io.seed = seed;
  io.show_progress = progress;
  const retrieval::IndexInfo i = retrieval::build_index(dir, io);
  spdlog::info("index {}: {} rows, {:.1f} MB ({:.0f} B/item), {:.1f} s", retrieval::index_spec_name(i.spec), i.count,
               i.bytes / 1e6, i.count ? double(i.bytes) / double(i.count) : 0.0, i.seconds);
}

void print_info(const nlohmann::json& j) {
  std::printf("store      %s\n", j["dir"].get<std::string>().c_str());
  std::printf("bundle     %s (image encoder %s)\n", j["bundle"]["name"].get<std::string>().c_str(),
              j["bundle"]["image_encoder_sha256"].get<std::string>().substr(0, 16).c_str());
  std::printf("items      %lld of %lld planned (%lld skipped as unreadable), dim %lld, %.1f MB of features\n",
              (long long)j["count"].get<int64_t>(), (long long)j["planned_inputs"].get<int64_t>(),
              (long long)j["skipped"].get<int64_t>(), (long long)j["dim"].get<int64_t>(),
              j["feature_bytes"].get<int64_t>() / 1e6);
  const auto& src = j["source"];
  std::printf("source     %s %s\n", src.value("kind", std::string("?")).c_str(), src.value("root", std::string()).c_str());
  if (src.contains("shard")) {
    const auto& s = src["shard"];
    std::printf("shard      %lld/%lld: items [%lld, %lld) of %lld\n", (long long)s["index"].get<int64_t>(),
                (long long)s["count"].get<int64_t>(), (long long)s["first"].get<int64_t>(),
                (long long)s["end"].get<int64_t>(), (long long)s["total"].get<int64_t>());
  }
  if (src.contains("merged_from")) std::printf("merged     from %zu shard stores\n", src["merged_from"].size());
  std::printf("complete   %s\n", j.contains("problem") ? j["problem"].get<std::string>().c_str() : "yes");
  if (j["index"].is_object()) {
    const auto& i = j["index"];
    std::printf("index      %s, %.1f MB, default nprobe %lld, FAISS %s%s\n", i["spec"].get<std::string>().c_str(),
                i["bytes"].get<int64_t>() / 1e6, (long long)i["default_nprobe"].get<int64_t>(),
                i["faiss_version"].get<std::string>().c_str(),
                i["stale"].get<bool>() ? "  STALE (rebuild: ctok-index index STORE)" : "");
  } else {
    std::printf("index      none (ctok-search uses an exact scan; build one: ctok-index index STORE)\n");
  }
  if (j.contains("verified")) {
    std::printf("verified   OK: %lld rows, max |norm - 1| %.2e\n", (long long)j["verified"]["rows"].get<int64_t>(),
                j["verified"]["max_norm_error"].get<double>());
  }
}

}  // namespace

int main(int argc, char** argv) {
  return tool::run_tool(argc, argv, "Embed a catalogue into a gallery store and index it with FAISS.",
                        [&](CLI::App& app) {
    tool::CommonOptions common;
    tool::add_common_options(app, common, tool::kAllCommon & ~tool::kConfig);
    app.require_subcommand(1);
    app.fallthrough();

    // build
    CLI::App* b = app.add_subcommand("build", "embed images (a folder, a list, a DeepFashion2 split) into a store");
    std::string images, list, df2, split = "validation", out, shard = "0/1";
    retrieval::CatalogueBuildOptions bo;
    IndexFlags bf;
    bool fail_bad = false, no_verify = false;
    auto* o_images = b->add_option("--images", images, "folder of images (recursive)")->type_name("DIR");
    auto* o_list = b->add_option("--list", list, "file with one image path per line (optional TAB x1,y1,x2,y2 box)")
                       ->type_name("FILE");
    auto* o_df2 = b->add_option("--df2", df2, "DeepFashion2-layout root: the shop items of --split")->type_name("ROOT");
    b->add_option("--split", split, "split of --df2")->capture_default_str();
    o_images->excludes(o_list)->excludes(o_df2);
    o_list->excludes(o_df2);
    b->add_option("--out", out, "the store folder (an interrupted build resumes there)")->required()->type_name("STORE");
    b->add_option("--shard", shard, "embed slice i of n (0-based) of the list, for n machines; merge joins them")
        ->capture_default_str();
    b->add_option("--shard-size", bo.shard_size, "items per features file")->check(CLI::PositiveNumber)->capture_default_str();
    b->add_option("--batch", bo.batch_size, "images per encoder call")->check(CLI::PositiveNumber)->capture_default_str();
    b->add_option("--decode-threads", bo.threads, "image decode threads (0: all cores)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    b->add_flag("--fail-bad", fail_bad, "stop at the first unreadable image (default: name it, skip it, count it)");
    add_index_flags(b, bf, "index built after the last shard (not for --shard i/n with n > 1: merge builds it)");
    b->add_flag("--no-verify", no_verify, "skip the bundle's sha256 check");

    // merge
    CLI::App* m = app.add_subcommand("merge", "join the shard stores of one list into one store and index it");
    std::vector<std::string> inputs;
    std::string mout;
    IndexFlags mf;
    m->add_option("stores", inputs, "shard stores (every i of n)")->required()->type_name("STORE");
    m->add_option("--out", mout, "the merged store (a new folder)")->required()->type_name("STORE");
    add_index_flags(m, mf, "index of the merged store");

    // index
    CLI::App* x = app.add_subcommand("index", "build (or rebuild) the FAISS index of a complete store");
    std::string xdir;
    IndexFlags xf;
    x->add_option("store", xdir, "the store")->required()->type_name("STORE");
    add_index_flags(x, xf, "index");

    // info
    CLI::App* inf = app.add_subcommand("info", "what a store holds; --verify reads and checks every file");
    std::string idir;
    bool verify = false, as_json = false;
    inf->add_option("store", idir, "the store")->required()->type_name("STORE");
    inf->add_flag("--verify", verify, "read every shard (finite, unit norm, row counts) and check the index's sha256");
    inf->add_flag("--json", as_json, "print JSON");

    tool::parse(app, argc, argv, common, tool::kAllCommon & ~tool::kConfig);
    const bool progress = common.verbosity() >= 0;
    const uint64_t seed = common.seed.value_or(0);

    if (b->parsed()) {
      const int sources = !images.empty() + !list.empty() + !df2.empty();
      if (sources != 1) throw bad_input("give one of --images DIR, --list FILE, --df2 ROOT").key("images");
      bo.shard = retrieval::parse_shard(shard);
      if (bo.shard.count > 1 && b->count("--index") && bf.spec != "none") {
        throw bad_input("a shard store is not indexed: ctok-index merge builds the index of the joined store").key("index")
            .found(bf.spec);
      }
      if (bf.spec != "none") retrieval::parse_index_spec(bf.spec);  // bad spec: before hours of embedding
      const retrieval::CatalogueList cat = !images.empty() ? retrieval::catalogue_from_folder(images)
                                           : !list.empty() ? retrieval::catalogue_from_list(list)
                                                           : retrieval::catalogue_from_df2(df2, split);
      const model::Bundle bundle = tool::load_bundle(common, !no_verify);
      bo.dir = out;
      bo.skip_bad = !fail_bad;
      bo.show_progress = progress;
      const auto [first, end] = retrieval::shard_range(static_cast<int64_t>(cat.items.size()), bo.shard);
      spdlog::info("{} items in the list; shard {} holds [{}, {})", cat.items.size(), shard, first, end);
      const retrieval::GalleryInfo g = retrieval::build_catalogue(bundle, cat, bo);
      spdlog::info("store {}: {} rows ({} skipped as unreadable)", out, g.count, g.skipped.size());
      if (bo.shard.count == 1) make_index(out, bf, seed, progress);
      return 0;
    }
    if (m->parsed()) {
      if (mf.spec != "none") retrieval::parse_index_spec(mf.spec);
      const retrieval::MergeReport r = retrieval::merge_catalogues(inputs, mout);
      spdlog::info("merged {} shard stores: {} rows in {} ({:.1f} s)", r.inputs, r.info.count, mout, r.seconds);
      make_index(mout, mf, seed, progress);
      return 0;
    }
    if (x->parsed()) {
      if (xf.spec == "none") throw bad_input("--index none builds nothing").key("index");
      make_index(xdir, xf, seed, progress);
      return 0;
    }
    const nlohmann::json j = retrieval::describe_store(idir, verify);
    if (as_json) {
      std::cout << j.dump(2) << "\n";
    } else {
      print_info(j);
    }
    return j.contains("problem") ? 2 : 0;
  });
}
