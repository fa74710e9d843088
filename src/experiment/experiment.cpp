// Experiment expansion, cell bookkeeping and results (include/ctok/experiment/experiment.hpp).
#include "ctok/experiment/experiment.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/sha256.hpp"

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
      } catch (const std::exception& err) {
        std::lock_guard<std::mutex> lock(mu);
        o.status = "failed";
        o.error = err.what();
        failed_once = true;
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

void write_results(const Experiment& exp, const std::string& out_dir) {
  std::vector<Cell> done;
  std::vector<json> metrics;
  for (const auto& c : expand(exp)) {
    const std::string dir = out_dir + "/" + c.id;
    if (!file_exists(dir + "/DONE")) continue;
    done.push_back(c);
    metrics.push_back(json::parse(read_text_file(dir + "/metrics.json")));
  }
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
