// GAIR, generation-aided image retrieval (docs/method.md §4, docs/gair.md): a composite
// query is rendered so a person can look at it, corrected at inference time by blending its
// feature with the attribute words alone (or the concept alone) over an alpha grid, scored
// for intent automatically, and used to retrieve from a gallery.
//
//   ctok::gair::Query q = ctok::gair::parse_query("a photo of a <x> dress in blue", "<x>", "dress", &attributes);
//   // q.attribute_prompt "a photo of a dress in blue", q.concept_prompt "a photo of a <x> dress"
//   ctok::gair::Correction c = ctok::gair::correct_and_score(bundle, tokens, q, concept_features, options);
//   c.alphas[c.chosen].query_feature;           // [F] L2-normalised corrected (and fused) query
//   ctok::gair::Search s = ctok::gair::search(gallery_features, c, correct_rows, options);
//
// Everything runs without gradients. Renders of every alpha use the same seeds
// (seed .. seed + n - 1), so tiles in one column differ only by the conditioning.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctok/image/image.hpp"
#include "ctok/model/bundle.hpp"
#include "ctok/model/clip.hpp"
#include "ctok/model/generate.hpp"
#include "ctok/token/attributes.hpp"

namespace ctok::gair {

// What the correction blends the composite query with.
enum class Emphasis {
  kAttribute,  // t(a): the query without the token ("a photo of a dress in blue")
  kConcept,    // t(c): the token alone ("a photo of a <x> dress")
};
Emphasis parse_emphasis(const std::string& name);  // "attribute" | "concept"; bad_input otherwise
std::string emphasis_name(Emphasis emphasis);

struct GairOptions {
  std::vector<double> alphas{0.0, 0.25, 0.5, 0.75, 1.0};  // the correction grid, each in [0, 1]
  Emphasis emphasis = Emphasis::kAttribute;
  std::optional<double> alpha;  // a fixed alpha in [0, 1] (overrules the automatic pick; added to the grid)
  double beta = 0.0;            // fusion weight of the renders' mean image feature (0: off)
  model::GenerateOptions generate;  // the renders of every alpha (n per alpha)
  int top_k = 8;                // retrieved items kept per alpha
  int64_t chunk = 4096;         // gallery rows per matrix product
};

// bad_input naming the option: empty grid, alpha outside [0, 1] or not finite, beta < 0,
// n < 1, steps < 1, top_k < 1, chunk < 1, batch < 1.
void validate(const GairOptions& options);
// "0,0.25,0.5" -> {0, 0.25, 0.5}; bad_input for a malformed list (alphas: range checked by validate).
std::vector<double> parse_alphas(const std::string& text);

// One attribute word of the query that the parent's attribute file knows.
struct AttributeMention {
  std::string list;                       // "colours", "patterns", "materials", "shapes"
  std::string word;                       // as found in the query, e.g. "blue"
  std::vector<std::string> alternatives;  // the list, the word included
  size_t index = 0;                       // of `word` in alternatives
  std::vector<std::string> prompts;       // the attribute prompt with the word replaced by each alternative
};

struct Query {
  std::string text;              // q: the composite query
  std::string token;             // the custom token it uses
  std::string parent;            // the token's parent word
  std::string attribute_prompt;  // a: q without the token
  std::string concept_prompt;    // c: "a photo of a <token> <parent>"
  std::vector<AttributeMention> mentions;
};

// Splits the composite query. bad_input (key "query") when it holds no custom token ("GAIR
// needs one"), or a "<...>" word other than `token`. `attributes` may be null (no
// attribute scoring); mentions are whole-word matches of its colours, patterns, materials
// and shapes in the attribute prompt.
Query parse_query(const std::string& text, const std::string& token, const std::string& parent,
                  const token::AttributeSet* attributes);

struct IntentScores {
  double concept_ = 0.0;   // mean cosine similarity of the renders to the concept's own images
  std::optional<double> attribute;  // mean softmax probability of the query's attribute word(s)
  std::optional<double> harmonic;   // 2 c a / (c + a), with c clamped at 0; null without attribute
  std::vector<double> per_mention;  // attribute fidelity of each mention
};

struct AlphaResult {
  double alpha = 0.0;
  torch::Tensor corrected;            // [F] normalise((1 - alpha) t(q) + alpha t(a or c))
  torch::Tensor query_feature;        // [F] the query used for retrieval (corrected, fused when beta > 0)
  std::vector<image::Image> renders;  // n images of the interpolated conditioning
  std::vector<uint64_t> seeds;
  torch::Tensor render_features;      // [n, F] L2-normalised image features of the renders
  IntentScores scores;
};

struct Correction {
  Query query;
  Emphasis emphasis = Emphasis::kAttribute;
  torch::Tensor plain;              // [F] t(q), L2-normalised: the query without correction
  std::vector<AlphaResult> alphas;  // in grid order
  int chosen = 0;                   // index into alphas
  std::string chosen_by;            // "auto" (best harmonic mean), "fixed" (--alpha), "default" (no attribute: alpha 0)
  double render_seconds = 0.0;      // text encoding + sampling + decoding
  double score_seconds = 0.0;       // image features + intent scores
};

// Called with (sampler steps done, total sampler steps).
using StepCallback = model::StepCallback;

// Encodes q, a and c, renders every alpha of the grid from the interpolated hidden states,
// scores each against `concept_features` ([K, F], any scale; normalised here) and the
// attribute mentions, and picks an alpha. The one call per concept that an evaluation needs.
Correction correct_and_score(const model::Bundle& bundle, const model::TokenVectors& tokens, const Query& query,
                             const torch::Tensor& concept_features, const GairOptions& options,
                             const StepCallback& on_step = {});

// The images' CLIP features [B, F], L2-normalised (preprocessed per the bundle manifest).
torch::Tensor image_features(const model::Bundle& bundle, const std::vector<image::Image>& images);

struct Hit {
  int64_t row = 0;  // gallery row
  int rank = 0;     // 1-based
  double score = 0.0;
  bool correct = false;
};

struct AlphaSearch {
  std::vector<Hit> top;                 // the top_k rows, best first
  std::optional<int64_t> first_true;    // rank of the best correct row (1 + rows scoring strictly higher)
};

struct Search {
  std::vector<AlphaSearch> alphas;      // one per Correction::alphas
  std::optional<int64_t> rank_before;   // the uncorrected query t(q) (alpha 0, no fusion)
  std::optional<int64_t> rank_after;    // the chosen alpha's query
  double seconds = 0.0;
};

// Exact search of every alpha's query over `gallery` ([N, F] L2-normalised), in chunks of
// options.chunk rows. `correct` lists the gallery rows that match the search intent (may
// be empty: ranks stay null).
Search search(const torch::Tensor& gallery, const Correction& correction, const std::vector<int64_t>& correct,
              const GairOptions& options);

}  // namespace ctok::gair
