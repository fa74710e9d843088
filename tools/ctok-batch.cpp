// ctok-batch: run an experiment (base config + grid) cell by cell, resumably.
//
//   ctok-batch run configs/experiments/x.json --out runs/x [--jobs N] [--shard i/n]
//              [--dry-run] [--fail-fast] [--force]
//   ctok-batch collect runs/x                merge shard sub-folders, write results
//
// Cells run the experiment's "command" (see docs/batch.md). Exit 0 when every selected
// cell is done, 1 when some failed or were interrupted, 2 on bad input.
#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

#include "common/tool.hpp"
#include "ctok/experiment/experiment.hpp"

namespace ex = ctok::experiment;

namespace {

std::atomic<bool> g_stop{false};
void on_sigint(int) {
  g_stop = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program at once
}

int run(const std::string& file, ex::RunOptions opt, const std::string& shard) {
  const ex::Experiment exp = ex::load_experiment(file);
  if (!shard.empty()) opt.shard = ex::parse_shard(shard);
  const ex::CellRunner runner = opt.dry_run ? ex::CellRunner() : ex::command_runner(exp);
  opt.stop = &g_stop;
  std::signal(SIGINT, on_sigint);
  const ex::RunReport r = ex::run_experiment(exp, runner, opt);
  std::signal(SIGINT, SIG_DFL);
  if (opt.dry_run) {
    for (const auto& o : r.cells)
      std::printf("%s  %-8s %s\n", o.cell.id.c_str(), o.status == "skipped" ? "done" : "to-run", o.cell.point.dump().c_str());
    std::printf("%zu cell(s): %d done, %d to run\n", r.cells.size(), r.skipped, r.pending);
    return 0;
  }
  for (const auto& o : r.cells)
    if (o.status == "failed") std::fprintf(stderr, "failed: %s %s: %s\n", o.cell.id.c_str(), o.cell.point.dump().c_str(), o.error.c_str());
  std::printf("%zu cell(s): %d run, %d already done, %d failed, %d not run; results in %s/summary.md\n", r.cells.size(),
              r.done, r.skipped, r.failed, r.pending, opt.out_dir.c_str());
  return r.failed || r.pending ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ctok::tool::run_tool(argc, argv, "Run an experiment grid cell by cell (resumable, shardable).", [&](CLI::App& app) {
    ctok::tool::CommonOptions common;
    const unsigned flags = ctok::tool::kVerbosity;
    ctok::tool::add_common_options(app, common, flags);
    app.require_subcommand(1);
    ex::RunOptions opt;
    std::string file, shard, collect_dir;
    CLI::App* run_cmd = app.add_subcommand("run", "run (or resume) the cells of an experiment file");
    run_cmd->add_option("FILE", file, "experiment JSON (base, grid, command)")->required();
    run_cmd->add_option("--out", opt.out_dir, "output folder (runs/NAME)")->required();
    run_cmd->add_option("--jobs", opt.jobs, "cells run at once")->default_val(opt.jobs)->check(CLI::PositiveNumber);
    run_cmd->add_option("--shard", shard, "run only shard i of n (by cell hash), e.g. 1/4");
    run_cmd->add_flag("--dry-run", opt.dry_run, "list the cells, run nothing");
    run_cmd->add_flag("--fail-fast", opt.fail_fast, "start no new cell after a failure");
    run_cmd->add_flag("--force", opt.force, "reuse an output folder of a different experiment");
    CLI::App* collect_cmd = app.add_subcommand("collect", "merge shard sub-folders of a run folder and write results");
    collect_cmd->add_option("DIR", collect_dir, "run folder holding shard sub-folders")->required();
    ctok::tool::parse(app, argc, argv, common, flags);
    if (*collect_cmd) {
      const ex::Experiment exp = ex::collect(collect_dir);
      std::printf("collected %s into %s (results.csv, results.json, summary.md)\n", exp.name.c_str(), collect_dir.c_str());
      return 0;
    }
    return run(file, opt, shard);
  });
}
