// Experiments: a base configuration plus a grid over any of its keys, expanded into cells
// that are run (by a CellRunner), skipped when already done, and summarised.
//
//   auto exp = ctok::experiment::load_experiment("configs/experiments/x.json");
//   auto cells = ctok::experiment::expand(exp);            // named by hash of the config
//   ctok::experiment::RunOptions opt;  opt.out_dir = "runs/x";
//   auto report = ctok::experiment::run_experiment(exp, runner, opt);
//
// Experiment file (JSON): {"name": str, "base": {...}, "grid": {"key": [v1, v2], ...},
// optional "command": str (for command_runner)}. Grid keys must name keys of "base"
// (dotted paths reach into nested objects); anything else is bad input naming the file.
//
// Cell folder runs/X/<cell-id>/: config.json, log, metrics.json, DONE (written last,
// atomically). A re-run skips cells with DONE and redoes the others; stopping (the stop
// flag, Ctrl-C in ctok-batch) loses at most the unfinished cells' work.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctok::experiment {

struct Experiment {
  std::string file;                 // where it was read from (for messages)
  std::string name;
  nlohmann::json base = nlohmann::json::object();
  std::vector<std::pair<std::string, std::vector<nlohmann::json>>> grid;  // file order
  std::string command;              // optional: shell command template for command_runner
};

struct Cell {
  std::string id;                   // first 12 hex digits of sha256(canonical config)
  nlohmann::json config;            // base with the grid values applied
  nlohmann::json point;             // {grid key: value} of this cell
};

struct ShardSpec {
  int index = 1;                    // 1-based
  int count = 1;
};

// "i/n" with 1 <= i <= n; bad_input otherwise (key "--shard").
ShardSpec parse_shard(const std::string& text);

Experiment load_experiment(const std::string& path);
Experiment parse_experiment(const nlohmann::json& j, const std::string& file);
std::vector<Cell> expand(const Experiment& exp);
// The cells of shard `s`, chosen by cell hash (stable whatever the grid order).
std::vector<Cell> select_shard(const std::vector<Cell>& cells, const ShardSpec& s);
// sha256 of the canonical expansion (name, cell ids): identifies "the same experiment".
std::string experiment_id(const Experiment& exp);

// Runs one cell: resolved config, the cell folder (exists; write the log there), a stop
// flag to poll. Returns the metrics (a JSON object of numbers). Throw to fail the cell.
using CellRunner =
    std::function<nlohmann::json(const nlohmann::json& config, const std::string& cell_dir, const std::atomic<bool>& stop)>;

// Runs `exp.command` through /bin/sh in the cell folder with {config} and {dir} replaced;
// stdout+stderr go to <dir>/log; the command writes {dir}/metrics.json. Non-zero exit fails.
CellRunner command_runner(const Experiment& exp);

struct CellOutcome;

struct RunOptions {
  std::string out_dir;
  int jobs = 1;                     // cells run at once
  ShardSpec shard;
  bool dry_run = false;             // list the cells (and which are done), run nothing
  bool fail_fast = false;           // stop starting cells after the first failure
  bool force = false;               // reuse an output folder of a different experiment
  const std::atomic<bool>* stop = nullptr;
  // After each cell this run finished or failed: (outcome, cells finished so far, cells to run).
  std::function<void(const CellOutcome&, int, int)> on_cell;
};

struct CellOutcome {
  Cell cell;
  std::string status;               // "done" (this run), "skipped" (DONE before), "failed", "pending"
  std::string error;
  nlohmann::json metrics;
};

struct RunReport {
  std::vector<CellOutcome> cells;
  int done = 0, skipped = 0, failed = 0, pending = 0;
};

// Writes <out>/experiment.json (refuses a folder of another experiment unless force),
// the cell folders, and <out>/results.csv, results.json, summary.md (over all finished cells).
RunReport run_experiment(const Experiment& exp, const CellRunner& runner, const RunOptions& opt);

// Rewrites results.csv/results.json/summary.md of `out_dir` from the cell folders.
//
// A cell's metrics.json is either a flat object of numbers (one results row per cell) or,
// as the evaluation cells write it, {"main": "mrr", "table": [rows], "seeds": [rows],
// "per_concept": {label: {unit: value}}}: results.json/csv get one row per cell and seed
// ("seeds"), summary.md the "table" rows (the main metric with its 95% interval) and, for
// each grid key with several values, the paired deltas of every cell against the cell
// that differs from it only in that key, at the key's first value (paired bootstrap over
// the units both cells share, 95%).
void write_results(const Experiment& exp, const std::string& out_dir);

// `ctok-batch collect runs/X/`: merges the finished cells of the shard sub-folders of
// out_dir (each with its experiment.json, e.g. runs/X/shard-1of2) into out_dir and writes
// its results. bad_input when the shards belong to different experiments.
Experiment collect(const std::string& out_dir);

}  // namespace ctok::experiment
