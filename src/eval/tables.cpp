// Tables of the retrieval evaluation from its per-(concept, seed) records: MRR and R@K over
// concepts with bootstrap intervals, paired deltas against text and inversion only.
#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "ctok/core/error.hpp"
#include "ctok/core/json.hpp"
#include "ctok/eval/eval.hpp"

namespace ctok::eval {

using Json = nlohmann::json;

namespace {

Json ranks_json(const std::map<std::string, int64_t>& ranks) {
  Json j = Json::object();
  for (const auto& [m, r] : ranks) j[m] = r;
  return j;
}

std::map<std::string, int64_t> ranks_from(const Json& j, const std::string& key, const std::string& origin) {
  std::map<std::string, int64_t> out;
  auto it = j.find(key);
  if (it == j.end()) return out;
  if (!it->is_object()) throw bad_input("wrong type").file(origin).key(key).expected("object").found(json::describe(*it));
  for (auto r = it->begin(); r != it->end(); ++r) {
    if (!r.value().is_number_integer() || r.value().get<int64_t>() < 1) {
      throw bad_input("a rank must be an integer >= 1").file(origin).key(key + "." + r.key())
          .found(json::describe(r.value()));
    }
    out[r.key()] = r.value().get<int64_t>();
  }
  return out;
}

Json interval_json(const retrieval::Interval& i) { return {{"mean", i.mean}, {"lo", i.lo}, {"hi", i.hi}}; }

// Per concept (in key order) the seed-averaged value of f(rank) of a method; only concepts
// where the method has a rank for every seed record present.
using ConceptKey = std::pair<int64_t, int>;
std::map<ConceptKey, double> per_concept(const std::vector<const UnitRecord*>& records, const std::string& method,
                                         bool composition, double (*f)(int64_t, int64_t), int64_t k) {
  std::map<ConceptKey, std::pair<double, int>> acc;
  for (const UnitRecord* r : records) {
    const auto& ranks = composition ? r->composition_ranks : r->ranks;
    auto it = ranks.find(method);
    if (it == ranks.end()) continue;
    auto& a = acc[{r->pair_id, r->style}];
    a.first += f(it->second, k);
    a.second += 1;
  }
  std::map<ConceptKey, double> out;
  for (const auto& [key, a] : acc) out[key] = a.first / a.second;
  return out;
}

double rr(int64_t rank, int64_t) { return 1.0 / static_cast<double>(rank); }
double hit(int64_t rank, int64_t k) { return rank <= k ? 1.0 : 0.0; }

std::vector<double> values(const std::map<ConceptKey, double>& m) {
  std::vector<double> v;
  for (const auto& [k, x] : m) v.push_back(x);
  return v;
}

// The paired difference a - b over the concepts both have.
Json paired(const std::map<ConceptKey, double>& a, const std::map<ConceptKey, double>& b,
            const retrieval::BootstrapOptions& o) {
  std::vector<double> va, vb;
  for (const auto& [k, x] : a) {
    auto it = b.find(k);
    if (it == b.end()) continue;
    va.push_back(x);
    vb.push_back(it->second);
  }
  if (va.empty()) return nullptr;
  Json j = interval_json(retrieval::paired_bootstrap(va, vb, o));
  j["concepts"] = va.size();
  return j;
}

std::string fmt(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", x);
  return buf;
}

std::string fmt_signed(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.3f", x);
  return buf;
}

std::string cell(const Json& i, bool sign = false) {
  if (i.is_null()) return "-";
  auto f = sign ? fmt_signed : fmt;
  return f(i.at("mean").get<double>()) + " [" + f(i.at("lo").get<double>()) + ", " + f(i.at("hi").get<double>()) + "]";
}

}  // namespace

Json UnitRecord::to_json() const {
  Json j = {{"pair_id", pair_id}, {"style", style},    {"seed", seed},
            {"category", category}, {"word", word},     {"ranks", ranks_json(ranks)},
            {"seconds", seconds},  {"extra", extra}};
  if (!composition_ranks.empty()) {
    j["composition"] = {{"style", composition_style}, {"colour", composition_colour},
                        {"ranks", ranks_json(composition_ranks)}};
  }
  return j;
}

UnitRecord UnitRecord::from_json(const Json& j, const std::string& origin) {
  json::require_object(j, origin);
  UnitRecord r;
  r.pair_id = json::require<int64_t>(j, "pair_id", origin);
  r.style = json::require<int>(j, "style", origin);
  r.seed = json::require<uint64_t>(j, "seed", origin);
  r.category = json::optional<std::string>(j, "category", origin, "");
  r.word = json::optional<std::string>(j, "word", origin, "");
  r.ranks = ranks_from(j, "ranks", origin);
  if (auto c = j.find("composition"); c != j.end()) {
    json::require_object(*c, origin);
    r.composition_style = json::require<int>(*c, "style", origin);
    r.composition_colour = json::optional<std::string>(*c, "colour", origin, "");
    r.composition_ranks = ranks_from(*c, "ranks", origin);
  }
  if (auto s = j.find("seconds"); s != j.end() && s->is_object()) {
    for (auto it = s->begin(); it != s->end(); ++it)
      if (it.value().is_number()) r.seconds[it.key()] = it.value().get<double>();
  }
  if (auto e = j.find("extra"); e != j.end()) r.extra = *e;
  return r;
}

Json summarize(const std::vector<UnitRecord>& records, const TableOptions& options) {
  std::vector<const UnitRecord*> rs;
  std::set<ConceptKey> concepts;
  std::set<uint64_t> seeds;
  for (const auto& r : records) {
    if (options.composition && r.composition_ranks.empty()) continue;
    rs.push_back(&r);
    concepts.insert({r.pair_id, r.style});
    seeds.insert(r.seed);
  }
  Json out = {{"concepts", concepts.size()}, {"records", rs.size()}, {"seeds", seeds},
              {"query", options.composition ? "composition" : "plain"}, {"methods", Json::object()},
              {"order", Json::array()}};
  if (rs.empty()) return out;
  std::map<std::string, std::map<ConceptKey, double>> rrs;
  for (const auto& m : options.methods) rrs[m] = per_concept(rs, m, options.composition, rr, 0);
  for (const auto& m : options.methods) {
    const auto& v = rrs[m];
    if (v.empty()) continue;
    out["order"].push_back(m);
    Json mj = {{"concepts", v.size()}};
    retrieval::BootstrapOptions bo = options.bootstrap;
    mj["mrr"] = interval_json(retrieval::bootstrap(values(v), bo));
    Json rec = Json::object();
    for (int64_t k : options.recall_at)
      rec[std::to_string(k)] = interval_json(retrieval::bootstrap(values(per_concept(rs, m, options.composition, hit, k)), bo));
    mj["recall"] = rec;
    mj["delta_text"] = (m != "text" && rrs.count("text")) ? paired(v, rrs["text"], bo) : Json(nullptr);
    mj["delta_inv"] = (m != "inv" && rrs.count("inv")) ? paired(v, rrs["inv"], bo) : Json(nullptr);
    if (auto ref = options.reference.find(m); ref != options.reference.end()) {
      if (!rrs.count(ref->second)) rrs[ref->second] = per_concept(rs, ref->second, options.composition, rr, 0);
      if (!rrs[ref->second].empty()) mj["delta_ref"] = {{"against", ref->second}, {"delta", paired(v, rrs[ref->second], bo)}};
    }
    double secs = 0;
    int n = 0;
    for (const UnitRecord* r : rs) {
      if (auto it = r->seconds.find(m); it != r->seconds.end()) secs += it->second, ++n;
    }
    mj["seconds_per_unit"] = n ? secs / n : 0.0;
    out["methods"][m] = mj;
  }
  return out;
}

std::string markdown_table(const Json& s, const std::vector<int64_t>& recall_at) {
  std::ostringstream o;
  bool refs = false;
  for (const auto& m : s.at("order")) refs = refs || s.at("methods").at(m.get<std::string>()).contains("delta_ref");
  o << "| method | concepts | MRR [95% CI] |";
  for (int64_t k : recall_at) o << " R@" << k << " |";
  o << " ΔMRR vs text | ΔMRR vs inv |" << (refs ? " ΔMRR vs own token |" : "") << " s / unit |\n|---|---|---|";
  for (std::size_t i = 0; i < recall_at.size(); ++i) o << "---|";
  o << "---|---|" << (refs ? "---|" : "") << "---|\n";
  for (const auto& m : s.at("order")) {
    const Json& mj = s.at("methods").at(m.get<std::string>());
    o << "| " << m.get<std::string>() << " | " << mj.at("concepts").get<int64_t>() << " | " << cell(mj.at("mrr")) << " |";
    for (int64_t k : recall_at) o << " " << cell(mj.at("recall").at(std::to_string(k))) << " |";
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.2f", mj.at("seconds_per_unit").get<double>());
    o << " " << cell(mj.at("delta_text"), true) << " | " << cell(mj.at("delta_inv"), true) << " |";
    if (refs) {
      o << " " << (mj.contains("delta_ref") ? cell(mj["delta_ref"]["delta"], true) + " (" +
                                                  mj["delta_ref"]["against"].get<std::string>() + ")"
                                            : std::string("-"))
        << " |";
    }
    o << " " << secs << " |\n";
  }
  return o.str();
}

std::string ranks_csv(const std::vector<UnitRecord>& records) {
  std::vector<const UnitRecord*> rs;
  for (const auto& r : records) rs.push_back(&r);
  std::sort(rs.begin(), rs.end(), [](const UnitRecord* a, const UnitRecord* b) {
    return std::tie(a->pair_id, a->style, a->seed) < std::tie(b->pair_id, b->style, b->seed);
  });
  std::ostringstream o;
  o << "pair_id,style,seed,query,method,rank\n";
  for (const UnitRecord* r : rs) {
    for (const auto& [m, rank] : r->ranks)
      o << r->pair_id << "," << r->style << "," << r->seed << ",plain," << m << "," << rank << "\n";
    for (const auto& [m, rank] : r->composition_ranks)
      o << r->pair_id << "," << r->style << "," << r->seed << ",composition," << m << "," << rank << "\n";
  }
  return o.str();
}

}  // namespace ctok::eval
