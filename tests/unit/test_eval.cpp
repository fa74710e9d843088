// The eval module without models: method and seed lists, method configs, the tables from
// per-(concept, seed) records (seed averaging, paired deltas), record round trips.
#include <gtest/gtest.h>

#include "ctok/core/error.hpp"
#include "ctok/eval/eval.hpp"

#include "unit/test_util.hpp"

using namespace ctok;
using namespace ctok::eval;
using ctok::test::expect_bad_input;

namespace {

UnitRecord rec(int64_t pair, uint64_t seed, std::map<std::string, int64_t> ranks) {
  UnitRecord r;
  r.pair_id = pair;
  r.style = 1;
  r.seed = seed;
  r.ranks = std::move(ranks);
  return r;
}

}  // namespace

TEST(Eval, ParsesMethodsAndSeeds) {
  EXPECT_EQ(parse_methods("text, inv,inv+cls+sub"), (std::vector<std::string>{"text", "inv", "inv+cls+sub"}));
  expect_bad_input([] { parse_methods("text,magic"); }, "image-mean");  // the known ones are listed
  expect_bad_input([] { parse_methods("inv,inv"); }, "twice");
  expect_bad_input([] { parse_methods(""); }, "no method");
  EXPECT_EQ(parse_seeds("0,1,2"), (std::vector<uint64_t>{0, 1, 2}));
  expect_bad_input([] { parse_seeds("0,-1"); }, "seed");
  expect_bad_input([] { parse_seeds("3,3"); }, "twice");
  EXPECT_TRUE(is_learned("inv+cls"));
  EXPECT_FALSE(is_learned("image-mean"));
  // The GAIR rows are known methods but not run unless named (they need --composition).
  EXPECT_EQ(parse_methods("inv,gair,gair-fixed").size(), 3u);
  EXPECT_TRUE(is_gair("gair-fixed"));
  EXPECT_FALSE(is_learned("gair"));
  for (const auto& m : default_methods()) EXPECT_FALSE(is_gair(m)) << m;
  EXPECT_EQ(known_methods().size(), default_methods().size() + 2);
}

TEST(Eval, GairSettingsFromJson) {
  const auto g = GairEvalOptions::from_json({{"alphas", {0, 0.5}}, {"n", 2}, {"tune_min_identity", 61}}, "cell.json");
  EXPECT_EQ(g.alphas, (std::vector<double>{0, 0.5}));
  EXPECT_EQ(g.n, 2);
  EXPECT_EQ(g.steps, GairEvalOptions{}.steps);
  EXPECT_EQ(g.tune_min_identity, 61);
  const auto round = GairEvalOptions::from_json(g.to_json(), "x");
  EXPECT_EQ(round.to_json(), g.to_json());
  expect_bad_input([] { GairEvalOptions::from_json({{"alpha", 0.5}}, "cell.json"); }, "gair.alpha");  // unknown key, named
  expect_bad_input([] { GairEvalOptions::from_json({{"n", "four"}}, "cell.json"); }, "gair.n");
  expect_bad_input([] { GairEvalOptions::from_json({{"alphas", 0.5}}, "cell.json"); }, "gair.alphas");
  expect_bad_input([] { GairEvalOptions::from_json(nlohmann::json::array(), "cell.json"); }, "object");
}

TEST(Eval, SummaryPairsARowWithItsOwnReference) {
  // gair corrects inv: concept 1 inv 4 -> gair 1; concept 2 inv 2 -> gair 2 (composition ranks).
  std::vector<UnitRecord> rs = {rec(1, 0, {{"inv", 5}}), rec(2, 0, {{"inv", 5}})};
  rs[0].composition_style = rs[1].composition_style = 2;
  rs[0].composition_ranks = {{"inv", 4}, {"gair", 1}};
  rs[1].composition_ranks = {{"inv", 2}, {"gair", 2}};
  TableOptions o;
  o.methods = {"inv", "gair"};
  o.composition = true;
  o.bootstrap.resamples = 200;
  o.reference = {{"gair", "inv"}};
  const auto s = summarize(rs, o);
  ASSERT_TRUE(s["methods"]["gair"].contains("delta_ref")) << s.dump();
  EXPECT_EQ(s["methods"]["gair"]["delta_ref"]["against"], "inv");
  EXPECT_NEAR(s["methods"]["gair"]["delta_ref"]["delta"]["mean"].get<double>(), ((1 - 0.25) + 0.0) / 2, 1e-12);
  EXPECT_FALSE(s["methods"]["inv"].contains("delta_ref"));
  const std::string md = markdown_table(s, {1});
  EXPECT_NE(md.find("ΔMRR vs own token"), std::string::npos) << md;
  EXPECT_NE(md.find("(inv)"), std::string::npos) << md;
  // No reference: no column.
  o.reference.clear();
  EXPECT_EQ(markdown_table(summarize(rs, o), {1}).find("own token"), std::string::npos);
  // Plain tables have no gair row (composition queries only).
  o.composition = false;
  EXPECT_EQ(summarize(rs, o)["order"], nlohmann::json({"inv"}));
}

TEST(Eval, MethodConfigs) {
  token::LearnConfig base;
  base.lambda_inv = 0.7;
  base.lambda_cls = 0.2;
  base.subspace = "auto";
  const auto inv = method_config("inv", base), cls = method_config("cls", base), both = method_config("inv+cls", base),
             sub = method_config("inv+cls+sub", base);
  EXPECT_EQ(inv.lambda_cls, 0);
  EXPECT_EQ(inv.lambda_inv, 0.7);
  EXPECT_EQ(inv.subspace, "none");
  EXPECT_EQ(cls.lambda_inv, 0);
  EXPECT_EQ(cls.lambda_cls, 1);
  EXPECT_EQ(cls.subspace, "none");
  EXPECT_EQ(both.lambda_inv, 0.7);
  EXPECT_EQ(both.lambda_cls, 0.2);
  EXPECT_EQ(both.subspace, "none");
  EXPECT_EQ(sub.subspace, "auto");
  EXPECT_EQ(sub.lambda_cls, 0.2);
  EXPECT_THROW(method_config("text", base), Error);
  // The shipped defaults are inversion only with a free vector; the method table's base turns
  // the classification loss and the subspace on, so inv+cls is not inversion in disguise.
  EXPECT_EQ(token::LearnConfig{}.lambda_cls, 0);
  const auto mb = method_base_config();
  EXPECT_GT(method_config("inv+cls", mb).lambda_cls, 0);
  EXPECT_EQ(method_config("inv+cls+sub", mb).subspace, "auto");
  EXPECT_EQ(method_config("inv", mb).lambda_cls, 0);
  EXPECT_EQ(EvalOptions{}.learn.lambda_cls, mb.lambda_cls);
  EXPECT_EQ(ClassifyOptions{}.learn.subspace, "auto");
}

TEST(Eval, SummaryAveragesSeedsThenConcepts) {
  // Concept 1: text ranks 1 and 1 (seeds 0, 1); inv 2 and 4. Concept 2: text 10 (seed 0 only), inv 1.
  std::vector<UnitRecord> rs = {rec(1, 0, {{"text", 1}, {"inv", 2}}), rec(1, 1, {{"text", 1}, {"inv", 4}}),
                                rec(2, 0, {{"text", 10}, {"inv", 1}})};
  TableOptions o;
  o.methods = {"text", "inv", "cls"};
  o.recall_at = {1, 5};
  o.bootstrap.resamples = 200;
  const auto s = summarize(rs, o);
  EXPECT_EQ(s["concepts"], 2);
  EXPECT_EQ(s["records"], 3);
  EXPECT_EQ(s["order"], nlohmann::json({"text", "inv"}));  // cls has no rank: no row
  const double text = (1.0 + 0.1) / 2, inv = ((0.5 + 0.25) / 2 + 1.0) / 2;
  EXPECT_NEAR(s["methods"]["text"]["mrr"]["mean"].get<double>(), text, 1e-12);
  EXPECT_NEAR(s["methods"]["inv"]["mrr"]["mean"].get<double>(), inv, 1e-12);
  EXPECT_NEAR(s["methods"]["inv"]["recall"]["1"]["mean"].get<double>(), 0.5, 1e-12);   // (0 + 1) / 2
  EXPECT_NEAR(s["methods"]["inv"]["recall"]["5"]["mean"].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(s["methods"]["text"]["recall"]["5"]["mean"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(s["methods"]["inv"]["delta_text"]["mean"].get<double>(), inv - text, 1e-12);
  EXPECT_TRUE(s["methods"]["text"]["delta_text"].is_null());
  EXPECT_TRUE(s["methods"]["inv"]["delta_inv"].is_null());
  EXPECT_NEAR(s["methods"]["text"]["delta_inv"]["mean"].get<double>(), text - inv, 1e-12);
  const auto& i = s["methods"]["inv"]["mrr"];
  EXPECT_LE(i["lo"].get<double>(), i["mean"].get<double>());
  EXPECT_GE(i["hi"].get<double>(), i["mean"].get<double>());

  const std::string md = markdown_table(s, o.recall_at);
  EXPECT_NE(md.find("| text | 2 | 0.550 ["), std::string::npos) << md;
  EXPECT_NE(md.find("R@5"), std::string::npos);
  const std::string csv = ranks_csv(rs);
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "pair_id,style,seed,query,method,rank");
  EXPECT_NE(csv.find("1,1,1,plain,inv,4\n"), std::string::npos) << csv;

  // Composition tables only count the records that have composition ranks.
  rs[0].composition_ranks = {{"inv", 3}};
  rs[0].composition_style = 2;
  o.composition = true;
  const auto c = summarize(rs, o);
  EXPECT_EQ(c["concepts"], 1);
  EXPECT_NEAR(c["methods"]["inv"]["mrr"]["mean"].get<double>(), 1.0 / 3, 1e-12);
}

TEST(Eval, RecordsRoundTripAndBadRecordsAreNamed) {
  UnitRecord r = rec(7, 2, {{"text", 3}, {"inv", 1}});
  r.composition_ranks = {{"inv", 5}};
  r.composition_style = 3;
  r.composition_colour = "red";
  r.seconds = {{"inv", 1.5}};
  const UnitRecord back = UnitRecord::from_json(r.to_json(), "r.json");
  EXPECT_EQ(back.pair_id, 7);
  EXPECT_EQ(back.seed, 2u);
  EXPECT_EQ(back.ranks, r.ranks);
  EXPECT_EQ(back.composition_ranks, r.composition_ranks);
  EXPECT_EQ(back.composition_colour, "red");
  EXPECT_EQ(back.seconds.at("inv"), 1.5);
  auto j = r.to_json();
  j["ranks"]["inv"] = 0;
  expect_bad_input([&] { UnitRecord::from_json(j, "bad.json"); }, "bad.json");
}
