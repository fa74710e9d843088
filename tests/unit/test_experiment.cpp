// experiment: grid expansion, cell naming, shards, skip-DONE resume, results, collect.
#include <gtest/gtest.h>

#include <atomic>
#include <unistd.h>

#include <filesystem>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/experiment/experiment.hpp"

namespace ex = ctok::experiment;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

ex::Experiment sample() {
  return ex::parse_experiment(json::parse(R"({"name": "t", "base": {"lr": 0.1, "steps": 10, "opt": {"wd": 0}},
      "grid": {"lr": [0.1, 0.2], "opt.wd": [0, 1]}})"), "t.json");
}

std::string tmpdir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("ctok_test_experiment_" + name + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

ex::CellRunner fake(int* calls, double fail_lr = -1) {
  return [calls, fail_lr](const json& c, const std::string&, const std::atomic<bool>&) {
    ++*calls;
    if (c["lr"].get<double>() == fail_lr) throw std::runtime_error("boom");
    return json{{"mrr", c["lr"].get<double>() + c["opt"]["wd"].get<double>()}};
  };
}

}  // namespace

TEST(Experiment, ExpandsGridIntoCellsNamedByConfigHash) {
  const auto cells = ex::expand(sample());
  ASSERT_EQ(cells.size(), 4u);
  EXPECT_EQ(cells[3].config["opt"]["wd"], 1);
  EXPECT_EQ(cells[3].config["lr"], 0.2);
  // Same resolved config, same id, whatever the grid order.
  const auto other = ex::expand(ex::parse_experiment(json::parse(R"({"name": "t", "base": {"lr": 0.1, "steps": 10, "opt": {"wd": 0}},
      "grid": {"opt.wd": [1, 0], "lr": [0.2, 0.1]}})"), "u.json"));
  EXPECT_EQ(other[0].id, cells[3].id);
  EXPECT_NE(cells[0].id, cells[1].id);
}

TEST(Experiment, RejectsUnknownKeysAndEmptyGrid) {
  try {
    ex::parse_experiment(json::parse(R"({"base": {"lr": 1}, "grid": {"lx": [1]}})"), "bad.json");
    FAIL();
  } catch (const ctok::Error& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_EQ(e.file_context(), "bad.json");
    EXPECT_EQ(e.key_context(), "grid.lx");
  }
  EXPECT_THROW(ex::parse_experiment(json::parse(R"({"base": {"lr": 1}, "grid": {}})"), "e.json"), ctok::Error);
  EXPECT_THROW(ex::parse_experiment(json::parse(R"({"base": {}, "grid": {"a": [1]}, "extra": 1})"), "e.json"), ctok::Error);
}

TEST(Experiment, ShardSpecsAndShardsPartitionTheCells) {
  EXPECT_THROW(ex::parse_shard("3/2"), ctok::Error);
  EXPECT_THROW(ex::parse_shard("0/2"), ctok::Error);
  EXPECT_THROW(ex::parse_shard("1-2"), ctok::Error);
  const auto cells = ex::expand(sample());
  const auto a = ex::select_shard(cells, ex::parse_shard("1/2"));
  const auto b = ex::select_shard(cells, ex::parse_shard("2/2"));
  EXPECT_EQ(a.size() + b.size(), cells.size());
  for (const auto& c : a)
    for (const auto& d : b) EXPECT_NE(c.id, d.id);
}

TEST(Experiment, RerunSkipsDoneCellsAndRedoesFailedOnes) {
  const auto exp = sample();
  ex::RunOptions opt;
  opt.out_dir = tmpdir("rerun");
  int calls = 0;
  auto r = ex::run_experiment(exp, fake(&calls, 0.2), opt);
  EXPECT_EQ(r.done, 2);
  EXPECT_EQ(r.failed, 2);
  EXPECT_EQ(calls, 4);
  calls = 0;
  r = ex::run_experiment(exp, fake(&calls), opt);
  EXPECT_EQ(r.skipped, 2);
  EXPECT_EQ(r.done, 2);
  EXPECT_EQ(calls, 2);
  const std::string csv = ctok::read_text_file(opt.out_dir + "/results.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);  // header + 4 cells
  EXPECT_NE(ctok::read_text_file(opt.out_dir + "/summary.md").find("by lr"), std::string::npos);
  // Another experiment in the same folder: refused unless forced.
  auto other = exp;
  other.name = "other";
  EXPECT_THROW(ex::run_experiment(other, fake(&calls), opt), ctok::Error);
  opt.force = true;
  EXPECT_NO_THROW(ex::run_experiment(other, fake(&calls), opt));
  fs::remove_all(opt.out_dir);
}

TEST(Experiment, StopFlagLeavesUnfinishedCellsWithoutDone) {
  const auto exp = sample();
  ex::RunOptions opt;
  opt.out_dir = tmpdir("stop");
  std::atomic<bool> stop{false};
  opt.stop = &stop;
  int calls = 0;
  auto runner = [&](const json&, const std::string&, const std::atomic<bool>&) {
    if (++calls == 2) stop = true;  // "Ctrl-C" during the second cell
    return json{{"mrr", 1.0}};
  };
  const auto r = ex::run_experiment(exp, runner, opt);
  EXPECT_EQ(r.done, 1);
  EXPECT_EQ(r.pending, 3);
  stop = false;
  const auto again = ex::run_experiment(exp, runner, opt);
  EXPECT_EQ(again.skipped, 1);
  EXPECT_EQ(again.done, 3);
  fs::remove_all(opt.out_dir);
}

TEST(Experiment, CollectMergesShardsOfOneExperimentOnly) {
  const auto exp = sample();
  const std::string root = tmpdir("collect");
  int calls = 0;
  for (int i = 1; i <= 2; ++i) {
    ex::RunOptions opt;
    opt.out_dir = root + "/shard-" + std::to_string(i);
    opt.shard = ex::parse_shard(std::to_string(i) + "/2");
    opt.jobs = 2;
    ex::run_experiment(exp, fake(&calls), opt);
  }
  EXPECT_EQ(calls, 4);
  ex::collect(root);
  for (const auto& c : ex::expand(exp)) EXPECT_TRUE(ctok::file_exists(root + "/" + c.id + "/DONE"));
  auto other = exp;
  other.name = "other";
  ex::RunOptions opt;
  opt.out_dir = root + "/shard-x";
  ex::run_experiment(other, fake(&calls), opt);
  EXPECT_THROW(ex::collect(root), ctok::Error);
  fs::remove_all(root);
}

// Evaluation-style metrics: one results row per seed, intervals in summary.md, paired
// deltas of each cell against the cell differing only in one key, at its first value.
TEST(Experiment, TableResultsPerSeedAndPairedDeltas) {
  const ex::Experiment exp = ex::parse_experiment(
      json::parse(R"({"name": "tab", "base": {"lam": 0, "methods": ["text", "inv"]}, "grid": {"lam": [0, 1]}})"),
      "tab.json");
  const std::string out = tmpdir("table");
  // Cell lam=1 beats lam=0 on "inv" on every concept; "text" is the same in both cells.
  auto runner = [](const json& c, const std::string&, const std::atomic<bool>&) {
    const double lam = c["lam"].get<double>();
    json m = {{"main", "mrr"}, {"table", json::array()}, {"seeds", json::array()}, {"per_concept", json::object()}};
    for (const char* method : {"text", "inv"}) {
      const double base = std::string(method) == "inv" ? 0.2 + 0.3 * lam : 0.1;
      m["table"].push_back({{"query", "plain"}, {"method", method}, {"mrr", base}, {"mrr_lo", base - 0.05},
                            {"mrr_hi", base + 0.05}, {"r1", 0.0}, {"r10", 0.5}});
      for (int seed : {0, 1}) m["seeds"].push_back({{"seed", seed}, {"query", "plain"}, {"method", method}, {"mrr", base}});
      json pc = json::object();
      for (int k = 0; k < 10; ++k) pc["c" + std::to_string(k)] = base + 0.01 * k;
      m["per_concept"][std::string("plain/") + method] = pc;
    }
    return m;
  };
  ex::RunOptions o;
  o.out_dir = out;
  const ex::RunReport r = ex::run_experiment(exp, runner, o);
  EXPECT_EQ(r.done, 2);
  const json rows = json::parse(ctok::read_text_file(out + "/results.json"));
  EXPECT_EQ(rows.size(), 8u);  // 2 cells x 2 methods x 2 seeds
  const std::string csv = ctok::read_text_file(out + "/results.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "cell,lam,seed,query,method,mrr");
  const std::string md = ctok::read_text_file(out + "/summary.md");
  EXPECT_NE(md.find("| 0.500 [0.450, 0.550] |"), std::string::npos) << md;  // lam=1, inv, with its interval
  EXPECT_NE(md.find("paired deltas over lam (against lam = 0"), std::string::npos) << md;
  EXPECT_NE(md.find("| plain/inv | 0.300 [0.300, 0.300] * |"), std::string::npos) << md;
  EXPECT_EQ(md.find("| plain/text |"), std::string::npos) << md;  // identical in both cells: left out
  EXPECT_NE(md.find("1 (cell, method) pair(s) left out"), std::string::npos) << md;
  const json deltas = json::parse(ctok::read_text_file(out + "/deltas.json"));
  ASSERT_EQ(deltas.size(), 1u);
  EXPECT_EQ(deltas[0]["label"], "plain/inv");
  EXPECT_NEAR(deltas[0]["mean"].get<double>(), 0.3, 1e-9);
  EXPECT_EQ(deltas[0]["units"], 10);
  fs::remove_all(out);
}
