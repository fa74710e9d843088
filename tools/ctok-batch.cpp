// ctok-batch: run an experiment (base config + grid) cell by cell, resumably.
//
//   ctok-batch run configs/experiments/x.json --out runs/x [--jobs N] [--shard i/n]
//              [--dry-run] [--fail-fast] [--force] [--cache-dir DIR] [--no-plots]
//   ctok-batch collect runs/x                merge shard sub-folders, write results + plots
//   ctok-batch plot runs/x                   the plots of a finished or collected run
//
// Cells are evaluations run in process through the library (ctok-eval's retrieve and
// classify tasks; docs/batch.md lists the keys), or, when the experiment has a "command",
// that shell command. Exit 0 when every selected cell is done, 1 when some failed or were
// interrupted, 2 on bad input.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include "common/tool.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/experiment/eval_cells.hpp"
#include "ctok/experiment/experiment.hpp"
#include "ctok/model/manifest.hpp"

namespace ex = ctok::experiment;
using ctok::tool::CommonOptions;

namespace {

std::atomic<bool> g_stop{false};
void on_sigint(int) {
  g_stop = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program at once
}

struct BatchOptions {
  ex::RunOptions run;
  std::string file, shard, cache_dir;
  bool no_plots = false;
  bool no_verify = false;
};

// "inv 0.123, text 0.045" from a cell's table (plain queries), for the progress lines.
std::string headline(const nlohmann::json& m) {
  std::string s;
  const std::string main = m.value("main", "");
  if (!m.contains("table")) return s;
  for (const auto& r : m["table"]) {
    if (r.value("query", "plain") != "plain" || !r.contains(main) || !r[main].is_number()) continue;
    char b[96];
    std::snprintf(b, sizeof b, "%s%s %s %.3f", s.empty() ? "" : ", ", r.value("method", "").c_str(), main.c_str(),
                  r[main].get<double>());
    s += b;
    if (s.size() > 120) break;
  }
  return s;
}

int run(const CommonOptions& common, BatchOptions& o) {
  const ex::Experiment exp = ex::load_experiment(o.file);
  ex::RunOptions& opt = o.run;
  if (!o.shard.empty()) opt.shard = ex::parse_shard(o.shard);
  const bool eval_cells = exp.command.empty();
  ex::CellRunner runner;
  if (eval_cells) {
    ex::check_eval_cells(exp);  // every cell's keys, before anything runs (exit 2)
    // Threads: cells run in parallel (small models gain nothing from more threads per cell).
    const std::vector<ex::Cell> cells = ex::expand(exp);
    std::string bundle = cells.front().config.value("bundle", "");
    if (bundle.empty()) bundle = ctok::model::default_bundle_dir();
    const ctok::model::ThreadPlan plan = ctok::model::thread_plan(bundle, common.threads);
    const int all = plan.threads > 0 ? plan.threads : ctok::hardware_threads();
    const int per_cell = common.threads > 0 ? common.threads : std::max(1, all / std::max(1, opt.jobs));
    ctok::configure_threads(per_cell, plan.blas_threads > 0 ? std::max(1, plan.blas_threads / opt.jobs) : 0);
    ex::EvalCellOptions eo;
    eo.cache_dir = o.cache_dir.empty() ? opt.out_dir + "/cache" : o.cache_dir;
    eo.device = common.device;
    eo.verify_sha256 = !o.no_verify;
    eo.progress = opt.jobs == 1 && common.verbosity() >= 0;
    eo.decode_threads = std::max(1, ctok::hardware_threads() / std::max(1, opt.jobs));
    if (!opt.dry_run) runner = ex::eval_runner(eo);
    // Cells side by side: their messages go to their own logs; the terminal gets errors and
    // one line per finished cell (with the count of warnings in its log).
    if (opt.jobs > 1 && !spdlog::default_logger()->sinks().empty())
      spdlog::default_logger()->sinks().front()->set_level(spdlog::level::err);
    spdlog::info("{} cell(s) of {}; {} at once, {} libtorch thread(s) each; shared stores in {}", cells.size(), exp.name,
                 opt.jobs, per_cell, eo.cache_dir);
  } else if (!opt.dry_run) {
    runner = ex::command_runner(exp);
  }
  const auto t0 = std::chrono::steady_clock::now();
  opt.on_cell = [&](const ex::CellOutcome& c, int k, int n) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (c.status == "done")
    {
      const int warnings = c.metrics.value("warnings", 0);
      const std::string w = warnings > 0 ? " [" + std::to_string(warnings) + " warning(s) in " + opt.out_dir + "/" +
                                               c.cell.id + "/log]" : "";
      std::fprintf(stderr, "[%d/%d] cell %s %s done (%.0f s into the run)%s%s%s\n", k, n, c.cell.id.c_str(),
                   c.cell.point.dump().c_str(), s, headline(c.metrics).empty() ? "" : ": ", headline(c.metrics).c_str(),
                   w.c_str());
    }
    else
      spdlog::error("[{}/{}] cell {} {} failed: {}", k, n, c.cell.id, c.cell.point.dump(), c.error);
  };
  opt.stop = &g_stop;
  std::signal(SIGINT, on_sigint);
  const ex::RunReport r = ex::run_experiment(exp, runner, opt);
  std::signal(SIGINT, SIG_DFL);
  if (opt.dry_run) {
    for (const auto& c : r.cells)
      std::printf("%s  %-8s %s\n", c.cell.id.c_str(), c.status == "skipped" ? "done" : "to-run", c.cell.point.dump().c_str());
    std::printf("%zu cell(s): %d done, %d to run\n", r.cells.size(), r.skipped, r.pending);
    return 0;
  }
  if (r.failed) std::fprintf(stderr, "%d cell(s) failed:\n", r.failed);
  for (const auto& c : r.cells)
    if (c.status == "failed") std::fprintf(stderr, "failed: %s %s: %s\n", c.cell.id.c_str(), c.cell.point.dump().c_str(), c.error.c_str());
  if (eval_cells && !o.no_plots && r.done + r.skipped > 0) ex::make_plots(opt.out_dir);
  std::printf("%zu cell(s): %d run, %d already done, %d failed, %d not run; results in %s/summary.md\n", r.cells.size(),
              r.done, r.skipped, r.failed, r.pending, opt.out_dir.c_str());
  if (g_stop) std::fprintf(stderr, "interrupted: run the same command to resume\n");
  return r.failed || r.pending ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ctok::tool::run_tool(argc, argv, "Run an experiment grid cell by cell (resumable, shardable).", [&](CLI::App& app) {
    CommonOptions common;
    const unsigned flags = ctok::tool::kVerbosity | ctok::tool::kDevice | ctok::tool::kThreads;
    ctok::tool::add_common_options(app, common, flags);
    app.require_subcommand(1);
    app.fallthrough();  // --threads, --device, -v ... also after the subcommand
    BatchOptions o;
    std::string dir;
    CLI::App* run_cmd = app.add_subcommand("run", "run (or resume) the cells of an experiment file");
    run_cmd->add_option("FILE", o.file, "experiment JSON (name, base, grid; optional command)")->required();
    run_cmd->add_option("--out", o.run.out_dir, "output folder (runs/NAME)")->required();
    run_cmd->add_option("--jobs", o.run.jobs, "cells run at once (threads are split between them)")
        ->default_val(o.run.jobs)->check(CLI::PositiveNumber);
    run_cmd->add_option("--shard", o.shard, "run only shard i of n (by cell hash), e.g. 1/4");
    run_cmd->add_option("--cache-dir", o.cache_dir, "shared gallery / feature stores (default OUT/cache)");
    run_cmd->add_flag("--dry-run", o.run.dry_run, "list the cells, run nothing");
    run_cmd->add_flag("--fail-fast", o.run.fail_fast, "start no new cell after a failure");
    run_cmd->add_flag("--force", o.run.force, "reuse an output folder of a different experiment");
    run_cmd->add_flag("--no-plots", o.no_plots, "skip the plots at the end");
    run_cmd->add_flag("--no-verify", o.no_verify, "skip the bundle's sha256 check");
    CLI::App* collect_cmd = app.add_subcommand("collect", "merge shard sub-folders of a run folder; results and plots");
    collect_cmd->add_option("DIR", dir, "run folder holding shard sub-folders")->required();
    collect_cmd->add_flag("--no-plots", o.no_plots, "skip the plots");
    CLI::App* plot_cmd = app.add_subcommand("plot", "the plots of a finished or collected run folder");
    plot_cmd->add_option("DIR", dir, "run folder")->required();
    ctok::tool::parse(app, argc, argv, common, flags);
    if (*collect_cmd) {
      const ex::Experiment exp = ex::collect(dir);
      if (exp.command.empty() && !o.no_plots) ex::make_plots(dir);
      std::printf("collected %s into %s (results.csv, results.json, summary.md)\n", exp.name.c_str(), dir.c_str());
      return 0;
    }
    if (*plot_cmd) {
      if (!ctok::file_exists(dir + "/results.json"))
        throw ctok::bad_input("not a finished run folder (no results.json)").file(dir);
      return ex::make_plots(dir) ? 0 : 1;
    }
    return run(common, o);
  });
}
