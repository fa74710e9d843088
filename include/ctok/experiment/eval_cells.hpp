// Experiment cells that run the library's evaluations in process (no shelling out): the
// retrieval table of ctok-eval (--task retrieve) and the hidden-category classification
// (--task classify). docs/batch.md lists the cell keys.
//
//   ex::Experiment exp = ex::load_experiment("configs/experiments/method-table.json");
//   ex::check_eval_cells(exp);                       // every cell's keys, before anything runs
//   ex::EvalCellOptions o;  o.cache_dir = "runs/x/cache";
//   ex::run_experiment(exp, ex::eval_runner(o), run_options);
//
// Cells share what does not depend on the token: the bundle is loaded once per worker
// thread and bundle folder, and the gallery / validation feature stores live in
// `cache_dir`, embedded once per (bundle, split) for every cell (a file lock makes
// concurrent cells take turns). Within a cell every token (concepts x seeds x methods) is
// learned by the cohort learner. Each cell writes its log, eval/ (ctok-eval's output
// folder: tokens, records, tables) and renders.png (the learned tokens rendered).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "ctok/experiment/experiment.hpp"

namespace ctok::experiment {

// The keys of an evaluation cell with their defaults (docs/batch.md).
nlohmann::json eval_cell_defaults(const std::string& task);

// bad_input naming `where` and the key: unknown keys, wrong types, unknown methods, a
// learn key LearnConfig does not have, values out of range.
void check_eval_cell(const nlohmann::json& config, const std::string& where);
// Every cell of the experiment (the file and the grid point named on failure).
void check_eval_cells(const Experiment& exp);

struct EvalCellOptions {
  std::string cache_dir;       // shared stores; "" : each cell's own eval/ folder
  std::string device = "cpu";
  bool verify_sha256 = true;   // bundle sha256 check at the first load
  bool progress = true;        // the eval's bar (off when cells run in parallel)
  int decode_threads = 0;      // image decoding threads per cell (0: all cores)
};

CellRunner eval_runner(const EvalCellOptions& options);

// The plots of a finished or collected run folder (PNG under <out>/plots/, through
// scripts/python/ctok_py/plots.py and python3-matplotlib; $CTOK_PLOTS_SCRIPT overrides the
// script). Returns false (with a warning naming what is missing) when they could not be made.
bool make_plots(const std::string& out_dir);

}  // namespace ctok::experiment
