#include "ctok/gair/gair.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <sstream>

#include "ctok/core/error.hpp"

namespace ctok::gair {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string fmt_double(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Whole-word occurrences of `word` in `text` (both lower case): word characters are
// letters, digits, '-' and '_'.
std::vector<size_t> find_words(const std::string& text, const std::string& word) {
  auto is_word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_'; };
  std::vector<size_t> out;
  if (word.empty()) return out;
  for (size_t p = text.find(word); p != std::string::npos; p = text.find(word, p + 1)) {
    const bool left = p == 0 || !is_word(text[p - 1]);
    const bool right = p + word.size() == text.size() || !is_word(text[p + word.size()]);
    if (left && right) out.push_back(p);
  }
  return out;
}

// Single spaces, none at the ends.
std::string squash_spaces(const std::string& s) {
  std::string out;
  for (char ch : s) {
    const bool space = std::isspace(static_cast<unsigned char>(ch));
    if (space && (out.empty() || out.back() == ' ')) continue;
    out.push_back(space ? ' ' : ch);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// After removing a word: "a" before a vowel becomes "an", "an" before a consonant "a".
std::string fix_articles(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  for (size_t i = 0; i + 1 < words.size(); ++i) {
    const char next = static_cast<char>(std::tolower(static_cast<unsigned char>(words[i + 1][0])));
    const bool vowel = std::string("aeiou").find(next) != std::string::npos;
    if (words[i] == "a" && vowel) words[i] = "an";
    if (words[i] == "an" && !vowel && std::isalpha(static_cast<unsigned char>(next))) words[i] = "a";
  }
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace

Emphasis parse_emphasis(const std::string& name) {
  if (name == "attribute") return Emphasis::kAttribute;
  if (name == "concept") return Emphasis::kConcept;
  throw bad_input("unknown emphasis").key("emphasis").expected("attribute | concept").found(name);
}

std::string emphasis_name(Emphasis e) { return e == Emphasis::kAttribute ? "attribute" : "concept"; }

void validate(const GairOptions& o) {
  if (o.alphas.empty()) throw bad_input("the alpha grid is empty").key("alphas");
  auto check_alpha = [](double a, const std::string& key) {
    if (!std::isfinite(a) || a < 0.0 || a > 1.0) {
      throw bad_input("alpha outside [0, 1]").key(key).expected("a number in [0, 1]").found(fmt_double(a));
    }
  };
  for (double a : o.alphas) check_alpha(a, "alphas");
  if (o.alpha) check_alpha(*o.alpha, "alpha");
  if (!std::isfinite(o.beta) || o.beta < 0) {
    throw bad_input("fusion weight beta must be >= 0").key("beta").found(fmt_double(o.beta));
  }
  const auto& g = o.generate;
  if (g.n < 1 || g.n > 256) throw bad_input("images per alpha out of range").key("n").expected("1..256").found(std::to_string(g.n));
  if (g.steps < 1) throw bad_input("sampler steps must be >= 1").key("steps").found(std::to_string(g.steps));
  if (g.batch < 1) throw bad_input("batch must be >= 1").key("batch").found(std::to_string(g.batch));
  if (!std::isfinite(g.guidance)) throw bad_input("guidance must be a finite number").key("guidance");
  if (!(g.eta >= 0 && g.eta <= 1)) throw bad_input("eta out of range").key("eta").expected("0..1").found(fmt_double(g.eta));
  if (o.top_k < 1) throw bad_input("top_k must be >= 1").key("top_k").found(std::to_string(o.top_k));
  if (o.chunk < 1) throw bad_input("chunk must be >= 1").key("chunk").found(std::to_string(o.chunk));
}

std::vector<double> parse_alphas(const std::string& text) {
  std::vector<double> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const std::string t = squash_spaces(item);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(t, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (t.empty() || used != t.size()) {
      throw bad_input("alphas must be a comma-separated list of numbers").key("alphas").found("\"" + text + "\"");
    }
    out.push_back(v);
  }
  if (out.empty()) throw bad_input("the alpha grid is empty").key("alphas");
  return out;
}

Query parse_query(const std::string& text, const std::string& token, const std::string& parent,
                  const token::AttributeSet* attributes) {
  Query q;
  q.text = squash_spaces(text);
  q.token = token;
  q.parent = parent;
  // Every "<...>" word must be the token.
  bool uses_token = false;
  for (size_t p = q.text.find('<'); p != std::string::npos; p = q.text.find('<', p + 1)) {
    const size_t e = q.text.find('>', p);
    if (e == std::string::npos) break;
    const std::string word = q.text.substr(p, e - p + 1);
    if (word.find(' ') != std::string::npos) continue;
    if (word != token) {
      throw bad_input("the query uses the custom token " + word + ", but the token file defines " + token)
          .key("query").found("\"" + q.text + "\"");
    }
    uses_token = true;
  }
  if (!uses_token) {
    throw bad_input("the query has no custom token: GAIR needs one (write the token " + token +
                    " into the query, e.g. \"a photo of a " + token + " " + parent + " in blue\")")
        .key("query").found("\"" + q.text + "\"");
  }
  std::string without = q.text;
  for (size_t p = without.find(token); p != std::string::npos; p = without.find(token)) without.erase(p, token.size());
  q.attribute_prompt = fix_articles(squash_spaces(without));
  q.concept_prompt = token::fill_template("a photo of a {token} {parent}", token, parent);
  if (!attributes) return q;

  // Attribute words of the attribute prompt, outside the parent phrase.
  const std::string a = lower(q.attribute_prompt);
  std::vector<std::pair<size_t, size_t>> taken;  // [begin, end) already claimed
  for (size_t p : find_words(a, lower(parent))) taken.push_back({p, p + parent.size()});
  const std::pair<const char*, const std::vector<std::string>*> lists[] = {
      {"colours", &attributes->colours}, {"patterns", &attributes->patterns},
      {"materials", &attributes->materials}, {"shapes", &attributes->shapes}};
  for (const auto& [name, words] : lists) {
    // Longest words first, so "light blue" wins over "blue".
    std::vector<size_t> order(words->size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return (*words)[x].size() > (*words)[y].size(); });
    for (size_t i : order) {
      const std::string w = lower((*words)[i]);
      for (size_t p : find_words(a, w)) {
        const bool overlaps = std::any_of(taken.begin(), taken.end(),
                                          [&](const auto& t) { return p < t.second && t.first < p + w.size(); });
        if (overlaps) continue;
        taken.push_back({p, p + w.size()});
        AttributeMention m;
        m.list = name;
        m.word = q.attribute_prompt.substr(p, w.size());
        m.alternatives = *words;
        m.index = i;
        for (const auto& alt : *words) {
          m.prompts.push_back(q.attribute_prompt.substr(0, p) + alt + q.attribute_prompt.substr(p + w.size()));
        }
        q.mentions.push_back(std::move(m));
        break;  // one mention per word
      }
    }
  }
  return q;
}

torch::Tensor image_features(const model::Bundle& bundle, const std::vector<image::Image>& images) {
  const image::Preprocess pre = model::image_preprocess(bundle);
  std::vector<image::FloatImage> px;
  px.reserve(images.size());
  for (const auto& im : images) px.push_back(image::preprocess(im, pre));
  model::ClipModel clip(bundle);
  return model::l2_normalize(clip.encode_images(px));
}

Correction correct_and_score(const model::Bundle& bundle, const model::TokenVectors& tokens, const Query& query,
                             const torch::Tensor& concept_features, const GairOptions& options,
                             const StepCallback& on_step) {
  validate(options);
  torch::NoGradGuard no_grad;
  if (concept_features.dim() != 2 || concept_features.size(0) < 1) {
    throw bad_input("GAIR needs the concept's own images (features [K, F], K >= 1)").key("concept_images");
  }
  Correction out;
  out.query = query;
  out.emphasis = options.emphasis;

  std::vector<double> grid = options.alphas;
  if (options.alpha && std::find(grid.begin(), grid.end(), *options.alpha) == grid.end()) {
    grid.push_back(*options.alpha);
    std::sort(grid.begin(), grid.end());
  }

  // Render: hidden states interpolated the same way as the features.
  auto t0 = Clock::now();
  model::ClipModel clip(bundle);
  clip.check_tokens(tokens);
  const model::TextEncoding enc = clip.encode_text({query.text, query.attribute_prompt, query.concept_prompt}, tokens);
  const torch::Tensor t = model::l2_normalize(enc.features.to(torch::kCPU, torch::kFloat32));
  const int64_t other = options.emphasis == Emphasis::kAttribute ? 1 : 2;
  out.plain = t[0].clone();
  std::vector<torch::Tensor> hidden;
  for (double a : grid) {
    AlphaResult r;
    r.alpha = a;
    r.corrected = model::l2_normalize((1.0 - a) * t[0] + a * t[other]);
    hidden.push_back((1.0 - a) * enc.hidden[0] + a * enc.hidden[other]);
    for (int j = 0; j < options.generate.n; ++j) r.seeds.push_back(options.generate.seed + static_cast<uint64_t>(j));
    out.alphas.push_back(std::move(r));
  }
  const std::vector<image::Image> images =
      model::to_images(model::generate(bundle, torch::stack(hidden), torch::Tensor(), options.generate, on_step));
  out.render_seconds = seconds_since(t0);

  // Score intent.
  t0 = Clock::now();
  const torch::Tensor feats = image_features(bundle, images);  // [A * n, F]
  const torch::Tensor concept_ = model::l2_normalize(concept_features.to(torch::kCPU, torch::kFloat32));
  std::vector<torch::Tensor> alt_features;  // per mention [m, F]
  for (const auto& m : query.mentions) {
    alt_features.push_back(model::l2_normalize(clip.encode_text(m.prompts).features.to(torch::kCPU, torch::kFloat32)));
  }
  const int n = options.generate.n;
  const double scale = bundle.logit_scale();
  for (size_t i = 0; i < out.alphas.size(); ++i) {
    AlphaResult& r = out.alphas[i];
    r.renders.assign(std::make_move_iterator(images.begin() + static_cast<long>(i) * n),
                     std::make_move_iterator(images.begin() + static_cast<long>(i + 1) * n));
    r.render_features = feats.slice(0, static_cast<int64_t>(i) * n, static_cast<int64_t>(i + 1) * n).clone();
    r.scores.concept_ = r.render_features.matmul(concept_.t()).mean().item<double>();
    for (size_t m = 0; m < alt_features.size(); ++m) {
      const torch::Tensor p = torch::softmax(scale * r.render_features.matmul(alt_features[m].t()), 1);
      r.scores.per_mention.push_back(p.select(1, static_cast<int64_t>(query.mentions[m].index)).mean().item<double>());
    }
    if (!r.scores.per_mention.empty()) {
      double sum = 0;
      for (double v : r.scores.per_mention) sum += v;
      const double attr = sum / static_cast<double>(r.scores.per_mention.size());
      const double c = std::max(0.0, r.scores.concept_);
      r.scores.attribute = attr;
      r.scores.harmonic = c + attr > 0 ? 2 * c * attr / (c + attr) : 0.0;
    }
    r.query_feature = options.beta > 0
                          ? model::l2_normalize(r.corrected + options.beta * r.render_features.mean(0))
                          : r.corrected;
  }

  // Pick.
  if (options.alpha) {
    out.chosen = static_cast<int>(std::find(grid.begin(), grid.end(), *options.alpha) - grid.begin());
    out.chosen_by = "fixed";
  } else if (out.alphas[0].scores.harmonic) {
    out.chosen = 0;
    for (size_t i = 1; i < out.alphas.size(); ++i) {
      if (*out.alphas[i].scores.harmonic > *out.alphas[static_cast<size_t>(out.chosen)].scores.harmonic) {
        out.chosen = static_cast<int>(i);
      }
    }
    out.chosen_by = "auto";
  } else {
    out.chosen = 0;  // the smallest alpha: as little correction as the grid allows
    out.chosen_by = "default";
  }
  out.score_seconds = seconds_since(t0);
  return out;
}

namespace {

// 1 + rows scoring strictly above the best correct row.
std::optional<int64_t> first_true_rank(const torch::Tensor& scores, const torch::Tensor& correct) {
  if (correct.numel() == 0) return std::nullopt;
  const double best = scores.index_select(0, correct).max().item<double>();
  return 1 + (scores > best).sum().item<int64_t>();
}

}  // namespace

Search search(const torch::Tensor& gallery, const Correction& c, const std::vector<int64_t>& correct,
              const GairOptions& options) {
  const auto t0 = Clock::now();
  torch::NoGradGuard no_grad;
  const torch::Tensor g = gallery.to(torch::kCPU, torch::kFloat32);
  if (g.dim() != 2 || g.size(1) != c.plain.size(0)) {
    throw bad_input("gallery features do not match the query feature dimension")
        .key("features").expected(std::to_string(c.plain.size(0)))
        .found(g.dim() == 2 ? std::to_string(g.size(1)) : "rank " + std::to_string(g.dim()));
  }
  const int64_t N = g.size(0);
  std::vector<torch::Tensor> queries{c.plain};
  for (const auto& a : c.alphas) queries.push_back(a.query_feature);
  const torch::Tensor Q = torch::stack(queries);  // [1 + A, F]
  // Scores [1 + A, N], computed in chunks of gallery rows.
  torch::Tensor scores = torch::empty({Q.size(0), N}, torch::kFloat32);
  for (int64_t b = 0; b < N; b += options.chunk) {
    const int64_t e = std::min(N, b + options.chunk);
    scores.slice(1, b, e).copy_(Q.matmul(g.slice(0, b, e).t()));
  }
  const torch::Tensor correct_t = torch::tensor(correct, torch::kLong);
  std::vector<bool> is_correct(static_cast<size_t>(N), false);
  for (int64_t r : correct) {
    if (r < 0 || r >= N) throw runtime_failure("correct gallery row out of range");
    is_correct[static_cast<size_t>(r)] = true;
  }

  Search s;
  s.rank_before = first_true_rank(scores[0], correct_t);
  const int64_t k = std::min<int64_t>(options.top_k, N);
  for (size_t i = 0; i < c.alphas.size(); ++i) {
    const torch::Tensor row = scores[static_cast<int64_t>(i) + 1];
    AlphaSearch a;
    a.first_true = first_true_rank(row, correct_t);
    if (k > 0) {
      auto [vals, idx] = row.topk(k);
      for (int64_t j = 0; j < k; ++j) {
        Hit h;
        h.row = idx[j].item<int64_t>();
        h.rank = static_cast<int>(j + 1);
        h.score = vals[j].item<double>();
        h.correct = is_correct[static_cast<size_t>(h.row)];
        a.top.push_back(h);
      }
    }
    s.alphas.push_back(std::move(a));
  }
  s.rank_after = s.alphas[static_cast<size_t>(c.chosen)].first_true;
  s.seconds = seconds_since(t0);
  return s;
}

}  // namespace ctok::gair
