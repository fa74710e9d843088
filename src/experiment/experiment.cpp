// Experiment expansion, cell bookkeeping and results (include/ctok/experiment/experiment.hpp).
#include "ctok/experiment/experiment.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "ctok/core/error.hpp"
#include "ctok/core/format.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/sha256.hpp"
#include "ctok/retrieval/metrics.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ctok::experiment {
namespace {

std::string canonical(const json& j) { return j.dump(-1, ' ', true, json::error_handler_t::replace); }

std::string hash12(const std::string& text) { return sha256_hex(text.data(), text.size()).substr(0, 12); }

// The json_pointer of a dotted key, or bad_input when `base` lacks it.
json::json_pointer pointer_in(const json& base, const std::string& key, const std::string& file) {
  std::string p;
  std::stringstream ss(key);
  std::string part;
  while (std::getline(ss, part, '.')) p += "/" + part;
  const json::json_pointer ptr(p);
  if (key.empty() || !base.contains(ptr)) {
    std::vector<std::string> known;
    for (auto it = base.begin(); it != base.end(); ++it) known.push_back(it.key());
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    throw bad_input("unknown grid key (grid keys must name a key of \"base\")")
        .file(file)
        .key("grid." + key)
        .expected("one of: " + list)
        .found(key);
  }
  return ptr;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / v.size();
}

std::string num(double x) {
  if (std::isnan(x)) return "";
  std::ostringstream o;
  o.precision(6);
  o << x;
  return o.str();
}

}  // namespace

ShardSpec parse_shard(const std::string& text) {
  ShardSpec s;
  const auto slash = text.find('/');
  try {
    if (slash == std::string::npos) throw 0;
    size_t a = 0, b = 0;
    s.index = std::stoi(text.substr(0, slash), &a);
    s.count = std::stoi(text.substr(slash + 1), &b);
    if (a != slash || b != text.size() - slash - 1) throw 0;
  } catch (...) {
    throw bad_input("bad shard spec").key("--shard").expected("i/n, e.g. 1/4").found(text);
  }
  if (s.count < 1 || s.index < 1 || s.index > s.count)
    throw bad_input("shard index out of range").key("--shard").expected("1 <= i <= n").found(text);
  return s;
}

Experiment parse_experiment(const json& j, const std::string& file) {
  if (!j.is_object()) throw bad_input("an experiment is a JSON object").file(file).found(j.type_name());
  static const std::set<std::string> kKeys = {"name", "base", "grid", "command", "description"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKeys.count(it.key()))
      throw bad_input("unknown key").file(file).key(it.key()).expected("name, base, grid, command, description");
  Experiment e;
  e.file = file;
  e.name = j.value("name", fs::path(file).stem().string());
  if (j.contains("base")) {
    if (!j["base"].is_object()) throw bad_input("\"base\" must be an object").file(file).key("base");
    e.base = j["base"];
  }
  if (j.contains("command")) {
    if (!j["command"].is_string()) throw bad_input("\"command\" must be a string").file(file).key("command");
    e.command = j["command"].get<std::string>();
  }
  if (!j.contains("grid") || !j["grid"].is_object() || j["grid"].empty())
    throw bad_input("empty grid: nothing to run").file(file).key("grid").expected("{\"key\": [values...], ...}");
  for (auto it = j["grid"].begin(); it != j["grid"].end(); ++it) {
    pointer_in(e.base, it.key(), file);
    if (!it.value().is_array() || it.value().empty())
      throw bad_input("a grid entry is a non-empty list of values").file(file).key("grid." + it.key())
          .found(it.value().dump());
    e.grid.emplace_back(it.key(), std::vector<json>(it.value().begin(), it.value().end()));
  }
  return e;
}

Experiment load_experiment(const std::string& path) {
  const std::string text = read_text_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& err) {
    throw bad_input(std::string("not valid JSON: ") + err.what()).file(path);
  }
  return parse_experiment(j, path);
}

std::vector<Cell> expand(const Experiment& exp) {
  std::vector<Cell> cells;
  std::vector<size_t> idx(exp.grid.size(), 0);
  while (true) {
    Cell c;
    c.config = exp.base;
    c.point = json::object();
    for (size_t k = 0; k < exp.grid.size(); ++k) {
      const auto& [key, values] = exp.grid[k];
      c.config[pointer_in(exp.base, key, exp.file)] = values[idx[k]];
      c.point[key] = values[idx[k]];
    }
    c.id = hash12(canonical(c.config));
    if (std::none_of(cells.begin(), cells.end(), [&](const Cell& o) { return o.id == c.id; })) cells.push_back(c);
    size_t k = exp.grid.size();
    while (k > 0) {
      --k;
      if (++idx[k] < exp.grid[k].second.size()) break;
      idx[k] = 0;
      if (k == 0) return cells;
    }
    if (exp.grid.empty()) return cells;
  }
}

std::vector<Cell> select_shard(const std::vector<Cell>& cells, const ShardSpec& s) {
  std::vector<Cell> out;
  for (const auto& c : cells)
    if (std::stoull(c.id.substr(0, 8), nullptr, 16) % s.count == static_cast<unsigned long long>(s.index - 1))
      out.push_back(c);
  return out;
}

std::string experiment_id(const Experiment& exp) {
  json ids = json::array();
  for (const auto& c : expand(exp)) ids.push_back(c.id);
  std::sort(ids.begin(), ids.end());
  return hash12(canonical(json{{"name", exp.name}, {"cells", ids}}));
}

CellRunner command_runner(const Experiment& exp) {
  if (exp.command.empty())
    throw bad_input("the experiment has no \"command\" to run its cells").file(exp.file).key("command");
  const std::string tmpl = exp.command;
  return [tmpl](const json&, const std::string& dir, const std::atomic<bool>&) {
    auto replace = [](std::string s, const std::string& from, const std::string& to) {
      for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
      return s;
    };
    const std::string q = "'" + dir + "'";
    std::string cmd = replace(replace(tmpl, "{config}", "'" + dir + "/config.json'"), "{dir}", q);
    cmd = "cd " + q + " && ( " + cmd + " ) > log 2>&1";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) {
      const int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + (WIFSIGNALED(rc) ? WTERMSIG(rc) : 0);
      throw runtime_failure("cell command exited with status " + std::to_string(code) + " (see " + dir + "/log)");
    }
    const std::string m = dir + "/metrics.json";
    if (!file_exists(m)) throw runtime_failure("cell command wrote no metrics.json").file(m);
    return json::parse(read_text_file(m));
  };
}

RunReport run_experiment(const Experiment& exp, const CellRunner& runner, const RunOptions& opt) {
  if (opt.out_dir.empty()) throw bad_input("no output folder").key("--out");
  const std::vector<Cell> cells = select_shard(expand(exp), opt.shard);
  const std::string id = experiment_id(exp);
  const std::string marker = opt.out_dir + "/experiment.json";
  if (file_exists(marker)) {
    const json old = json::parse(read_text_file(marker));
    if (old.value("id", "") != id && !opt.force)
      throw bad_input("the output folder holds a different experiment (use --force to reuse it)")
          .file(marker).expected(exp.name + " (" + id + ")")
          .found(old.value("name", "?") + " (" + old.value("id", "?") + ")");
  }
  RunReport report;
  for (const auto& c : cells) report.cells.push_back({c, "pending", "", json()});
  for (auto& o : report.cells)
    if (file_exists(opt.out_dir + "/" + o.cell.id + "/DONE")) o.status = "skipped";
  if (opt.dry_run) {
    for (const auto& o : report.cells) (o.status == "skipped" ? report.skipped : report.pending)++;
    return report;
  }
  fs::create_directories(opt.out_dir);
  json info = {{"name", exp.name}, {"id", id}, {"file", exp.file}, {"base", exp.base}, {"grid", json::object()}};
  for (const auto& [k, v] : exp.grid) info["grid"][k] = v;
  if (!exp.command.empty()) info["command"] = exp.command;
  write_file_atomic(marker, info.dump(2) + "\n");

  std::mutex mu;
  size_t next = 0;
  int finished = 0;
  const int to_run = static_cast<int>(std::count_if(report.cells.begin(), report.cells.end(),
                                                    [](const CellOutcome& o) { return o.status == "pending"; }));
  bool failed_once = false;
  const std::atomic<bool> never{false};
  const std::atomic<bool>& stop = opt.stop ? *opt.stop : never;
  auto worker = [&] {
    while (true) {
      size_t i;
      {
        std::lock_guard<std::mutex> lock(mu);
        while (next < report.cells.size() && report.cells[next].status == "skipped") ++next;
        if (next >= report.cells.size() || stop.load() || (opt.fail_fast && failed_once)) return;
        i = next++;
      }
      CellOutcome& o = report.cells[i];
      const std::string dir = opt.out_dir + "/" + o.cell.id;
      try {
        fs::create_directories(dir);
        fs::remove(dir + "/DONE");
        write_file_atomic(dir + "/config.json", o.cell.config.dump(2) + "\n");
        json m = runner(o.cell.config, dir, stop);
        if (stop.load()) continue;  // interrupted: no DONE, redone next time
        write_file_atomic(dir + "/metrics.json", m.dump(2) + "\n");
        write_file_atomic(dir + "/DONE", "");
        std::lock_guard<std::mutex> lock(mu);
        o.metrics = m;
        o.status = "done";
        if (opt.on_cell) opt.on_cell(o, ++finished, to_run);
        try {
          write_results(exp, opt.out_dir);  // the tables grow cell by cell
        } catch (const std::exception& err) {
          spdlog::warn("results not updated: {}", err.what());
        }
      } catch (const std::exception& err) {
        std::lock_guard<std::mutex> lock(mu);
        o.status = "failed";
        o.error = err.what();
        failed_once = true;
        if (opt.on_cell) opt.on_cell(o, ++finished, to_run);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, opt.jobs); ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  for (const auto& o : report.cells) {
    if (o.status == "done") ++report.done;
    else if (o.status == "skipped") ++report.skipped;
    else if (o.status == "failed") ++report.failed;
    else ++report.pending;
  }
  write_results(exp, opt.out_dir);
  return report;
}

namespace {

void write_flat_results(const Experiment& exp, const std::string& out_dir, const std::vector<Cell>& done,
                        const std::vector<json>& metrics) {
  std::vector<std::string> mkeys;
  for (const auto& m : metrics)
    for (auto it = m.begin(); it != m.end(); ++it)
      if (it.value().is_number() && std::find(mkeys.begin(), mkeys.end(), it.key()) == mkeys.end())
        mkeys.push_back(it.key());
  json rows = json::array();
  std::string csv = "cell";
  for (const auto& [k, v] : exp.grid) csv += "," + k;
  for (const auto& k : mkeys) csv += "," + k;
  csv += "\n";
  std::string md = "# " + exp.name + "\n\n" + std::to_string(done.size()) + " finished cell(s).\n\n| cell |";
  for (const auto& [k, v] : exp.grid) md += " " + k + " |";
  for (const auto& k : mkeys) md += " " + k + " |";
  md += "\n|---|";
  for (size_t i = 0; i < exp.grid.size() + mkeys.size(); ++i) md += "---|";
  md += "\n";
  for (size_t i = 0; i < done.size(); ++i) {
    rows.push_back({{"cell", done[i].id}, {"point", done[i].point}, {"metrics", metrics[i]}});
    csv += done[i].id;
    md += "| " + done[i].id + " |";
    for (const auto& [k, v] : exp.grid) {
      const json& x = done[i].point[k];
      const std::string s = x.is_string() ? x.get<std::string>() : x.dump();
      csv += "," + s;
      md += " " + s + " |";
    }
    for (const auto& k : mkeys) {
      const std::string s = metrics[i].contains(k) && metrics[i][k].is_number() ? num(metrics[i][k].get<double>()) : "";
      csv += "," + s;
      md += " " + s + " |";
    }
    csv += "\n";
    md += "\n";
  }
  // Means over the finished cells, per grid value of each key (the marginal effect of a key).
  for (const auto& [k, values] : exp.grid) {
    if (values.size() < 2 || mkeys.empty()) continue;
    md += "\n## by " + k + " (mean over the other keys)\n\n| " + k + " |";
    for (const auto& mk : mkeys) md += " " + mk + " |";
    md += "\n|---|";
    for (size_t i = 0; i < mkeys.size(); ++i) md += "---|";
    md += "\n";
    for (const auto& v : values) {
      md += "| " + (v.is_string() ? v.get<std::string>() : v.dump()) + " |";
      for (const auto& mk : mkeys) {
        std::vector<double> xs;
        for (size_t i = 0; i < done.size(); ++i)
          if (done[i].point[k] == v && metrics[i].contains(mk) && metrics[i][mk].is_number())
            xs.push_back(metrics[i][mk].get<double>());
        md += " " + num(mean_of(xs)) + " |";
      }
      md += "\n";
    }
  }
  write_file_atomic(out_dir + "/results.json", rows.dump(2) + "\n");
  write_file_atomic(out_dir + "/results.csv", csv);
  write_file_atomic(out_dir + "/summary.md", md);
}

}  // namespace

namespace {

std::string cell_text(const json& x) { return x.is_string() ? x.get<std::string>() : x.dump(); }

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string fixed3(const json& x) { return x.is_number() ? fixed(x.get<double>(), 3) : ""; }

std::string with_interval(const json& row, const std::string& key) {
  if (!row.contains(key)) return "";
  std::string s = fixed3(row[key]);
  if (row.contains(key + "_lo") && row.contains(key + "_hi"))
    s += " [" + fixed3(row[key + "_lo"]) + ", " + fixed3(row[key + "_hi"]) + "]";
  return s;
}

// The label of a table row: its string fields but "method" (the section: query, category).
std::string section_of(const json& row) {
  std::string s;
  for (auto it = row.begin(); it != row.end(); ++it)
    if (it.value().is_string() && it.key() != "method") s += (s.empty() ? "" : " / ") + it.value().get<std::string>();
  return s;
}

// Results of evaluation cells (metrics with "table", "seeds", "per_concept").
void write_table_results(const Experiment& exp, const std::string& out_dir, const std::vector<Cell>& done,
                         const std::vector<json>& metrics, size_t planned) {
  // results.json / results.csv: one row per cell and seed (and method, query).
  json rows = json::array();
  std::vector<std::string> cols;
  for (size_t i = 0; i < done.size(); ++i)
    for (const auto& r : metrics[i].value("seeds", json::array())) {
      json row = {{"cell", done[i].id}, {"point", done[i].point}};
      for (auto it = r.begin(); it != r.end(); ++it) {
        row[it.key()] = it.value();
        if (std::find(cols.begin(), cols.end(), it.key()) == cols.end()) cols.push_back(it.key());
      }
      rows.push_back(row);
    }
  std::vector<std::string> first;  // the row's identity first, then its numbers
  for (const char* k : {"seed", "query", "category", "method"})
    if (std::find(cols.begin(), cols.end(), k) != cols.end()) first.push_back(k);
  for (const auto& c : cols)
    if (std::find(first.begin(), first.end(), c) == first.end()) first.push_back(c);
  cols = first;
  std::string csv = "cell";
  for (const auto& [k, v] : exp.grid) csv += "," + csv_field(k);
  for (const auto& c : cols) csv += "," + c;
  csv += "\n";
  for (const auto& row : rows) {
    csv += row["cell"].get<std::string>();
    for (const auto& [k, v] : exp.grid) csv += "," + csv_field(cell_text(row["point"][k]));
    for (const auto& c : cols)
      csv += "," + (row.contains(c) && !row[c].is_null() ? csv_field(row[c].is_number_float() ? num(row[c].get<double>()) : cell_text(row[c])) : "");
    csv += "\n";
  }

  // summary.md: per section, every cell x method with the main metric's interval.
  const std::string main = metrics.empty() ? "mrr" : metrics.front().value("main", "mrr");
  std::string md = "# " + exp.name + "\n\n" + std::to_string(done.size()) + " of " + std::to_string(planned) +
                   " cell(s) finished. " + main + " with its 95% interval (" +
                   (main == "mrr" ? "bootstrap over concepts, seeds averaged per concept" : "t interval over seeds") +
                   ").\n";
  std::vector<std::string> sections;
  for (const auto& m : metrics)
    for (const auto& r : m["table"])
      if (std::find(sections.begin(), sections.end(), section_of(r)) == sections.end()) sections.push_back(section_of(r));
  const bool retrieval = main == "mrr";
  for (const auto& sec : sections) {
    md += "\n## " + (sec.empty() ? std::string("results") : sec) + "\n\n| cell |";
    for (const auto& [k, v] : exp.grid) md += " " + k + " |";
    md += retrieval ? " method | MRR [95%] | R@1 | R@10 | Δ text [95%] | s / unit |\n|---|"
                    : " method | accuracy [95%] | hidden recall | hidden precision |\n|---|";
    for (size_t i = 0; i < exp.grid.size() + (retrieval ? 6 : 4); ++i) md += "---|";
    md += "\n";
    for (size_t i = 0; i < done.size(); ++i)
      for (const auto& r : metrics[i]["table"]) {
        if (section_of(r) != sec) continue;
        md += "| " + done[i].id + " |";
        for (const auto& [k, v] : exp.grid) md += " " + cell_text(done[i].point[k]) + " |";
        md += " " + r.value("method", "") + " | " + with_interval(r, main) + " |";
        if (retrieval)
          md += " " + fixed3(r.value("r1", json())) + " | " + fixed3(r.value("r10", json())) + " | " +
                with_interval(r, "delta_text") + " | " + fixed3(r.value("seconds_per_unit", json())) + " |\n";
        else
          md += " " + fixed3(r.value("hidden_recall", json())) + " | " + fixed3(r.value("hidden_precision", json())) + " |\n";
      }
  }

  // Paired deltas: each cell against the one that differs only in key k, at k's first value.
  json deltas = json::array();
  for (const auto& [k, values] : exp.grid) {
    if (values.size() < 2) continue;
    std::string part;
    int identical = 0;
    for (size_t i = 0; i < done.size(); ++i) {
      if (done[i].point[k] == values.front()) continue;
      json ref_point = done[i].point;
      ref_point[k] = values.front();
      size_t j = done.size();
      for (size_t c = 0; c < done.size(); ++c)
        if (done[c].point == ref_point) j = c;
      if (j == done.size()) continue;
      const json& a = metrics[i]["per_concept"];
      const json& b = metrics[j]["per_concept"];
      for (auto it = a.begin(); it != a.end(); ++it) {
        if (!b.contains(it.key())) continue;
        std::vector<double> va, vb;
        for (auto u = it.value().begin(); u != it.value().end(); ++u)
          if (b[it.key()].contains(u.key()) && u.value().is_number() && b[it.key()][u.key()].is_number()) {
            va.push_back(u.value().get<double>());
            vb.push_back(b[it.key()][u.key()].get<double>());
          }
        if (va.empty()) continue;
        if (va == vb) {  // the key does not touch this method (e.g. the text baseline)
          ++identical;
          continue;
        }
        retrieval::BootstrapOptions bo;
        const retrieval::Interval d = retrieval::paired_bootstrap(va, vb, bo);
        const bool clear = d.lo > 0 || d.hi < 0;
        deltas.push_back({{"key", k}, {"value", done[i].point[k]}, {"reference", values.front()}, {"cell", done[i].id},
                          {"reference_cell", done[j].id}, {"point", done[i].point}, {"label", it.key()},
                          {"metric", main}, {"mean", d.mean}, {"lo", d.lo}, {"hi", d.hi}, {"units", va.size()}});
        part += "| " + done[i].id + " | " + cell_text(done[i].point[k]) + " | " + it.key() + " | " + fixed3(d.mean) +
                " [" + fixed3(d.lo) + ", " + fixed3(d.hi) + "]" + (clear ? " *" : "") + " | " + std::to_string(va.size()) +
                " |\n";
      }
    }
    if (part.empty()) continue;
    md += "\n## paired deltas over " + k + " (against " + k + " = " + cell_text(values.front()) + ", same other keys)\n\n" +
          "Δ " + main + " = cell − reference over the " + (retrieval ? "concepts" : "seeds") +
          " both have; 95% paired bootstrap; * the interval excludes 0.\n\n| cell | " + k +
          " | query / method | Δ " + main + " [95%] | units |\n|---|---|---|---|---|\n" + part;
    if (identical > 0)
      md += "\n" + std::to_string(identical) + " (cell, method) pair(s) left out: the same values in both cells (" + k +
            " does not touch that method).\n";
  }
  std::string failed;
  for (const auto& c : expand(exp))
    if (!file_exists(out_dir + "/" + c.id + "/DONE")) failed += "- " + c.id + " " + c.point.dump() + "\n";
  if (!failed.empty()) md += "\n## not finished\n\n" + failed;
  write_file_atomic(out_dir + "/results.json", rows.dump(2) + "\n");
  write_file_atomic(out_dir + "/deltas.json", deltas.dump(2) + "\n");
  write_file_atomic(out_dir + "/results.csv", csv);
  write_file_atomic(out_dir + "/summary.md", md);
}

}  // namespace

void write_results(const Experiment& exp, const std::string& out_dir) {
  std::vector<Cell> done;
  std::vector<json> metrics;
  const std::vector<Cell> all = expand(exp);
  for (const auto& c : all) {
    const std::string dir = out_dir + "/" + c.id;
    if (!file_exists(dir + "/DONE")) continue;
    done.push_back(c);
    metrics.push_back(json::parse(read_text_file(dir + "/metrics.json")));
  }
  const bool tables = !metrics.empty() && std::all_of(metrics.begin(), metrics.end(), [](const json& m) {
    return m.contains("table") && m["table"].is_array();
  });
  if (tables) write_table_results(exp, out_dir, done, metrics, all.size());
  else write_flat_results(exp, out_dir, done, metrics);
}

Experiment collect(const std::string& out_dir) {
  if (!directory_exists(out_dir)) throw bad_input("no such run folder").file(out_dir);
  std::vector<fs::path> shards;
  for (const auto& e : fs::directory_iterator(out_dir))
    if (e.is_directory() && file_exists((e.path() / "experiment.json").string())) shards.push_back(e.path());
  std::sort(shards.begin(), shards.end());
  if (shards.empty())
    throw bad_input("no shard folders (sub-folders with experiment.json) to collect").file(out_dir);
  Experiment exp;
  std::string id, first;
  for (const auto& sh : shards) {
    const std::string marker = (sh / "experiment.json").string();
    json info = json::parse(read_text_file(marker));
    const std::string sid = info.value("id", "");
    if (id.empty()) {
      id = sid;
      first = marker;
      json spec = {{"name", info.value("name", "")}, {"base", info["base"]}, {"grid", info["grid"]}};
      if (info.contains("command")) spec["command"] = info["command"];
      exp = parse_experiment(spec, marker);
    } else if (sid != id) {
      throw bad_input("shards of different experiments").file(marker).expected(id + " (as " + first + ")").found(sid);
    }
  }
  size_t copied = 0;
  for (const auto& sh : shards)
    for (const auto& e : fs::directory_iterator(sh)) {
      if (!e.is_directory() || !file_exists((e.path() / "DONE").string())) continue;
      const fs::path dst = fs::path(out_dir) / e.path().filename();
      if (file_exists((dst / "DONE").string())) continue;
      fs::remove_all(dst);
      const fs::path tmp = fs::path(out_dir) / (e.path().filename().string() + ".collecting");
      fs::remove_all(tmp);
      fs::copy(e.path(), tmp, fs::copy_options::recursive);
      fs::rename(tmp, dst);  // the cell appears whole, DONE included
      ++copied;
    }
  json info = json::parse(read_text_file((shards.front() / "experiment.json").string()));
  info["collected_from"] = json::array();
  for (const auto& sh : shards) info["collected_from"].push_back(sh.filename().string());
  write_file_atomic(out_dir + "/experiment.json", info.dump(2) + "\n");
  write_results(exp, out_dir);
  return exp;
}

}  // namespace ctok::experiment
