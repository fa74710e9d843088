#include "ctok/model/clip.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "ctok/core/error.hpp"
#include "torch_util.hpp"

namespace ctok::model {

namespace {

bool any_requires_grad(const TokenVectors& tokens, const std::map<std::string, int64_t>& used) {
  if (!torch::GradMode::is_enabled()) return false;
  for (const auto& [name, n] : used) {
    auto it = tokens.find(name);
    if (it != tokens.end() && it->second.requires_grad()) return true;
  }
  return false;
}

// "<...>" words (no whitespace or angle brackets inside) in a prompt.
std::vector<std::string> angle_words(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  while ((i = text.find('<', i)) != std::string::npos) {
    size_t j = i + 1;
    while (j < text.size() && text[j] != '>' && text[j] != '<' && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j < text.size() && text[j] == '>' && j > i + 1) {
      out.push_back(text.substr(i, j - i + 1));
      i = j + 1;
    } else {
      i = j;
    }
  }
  return out;
}

std::string short_prompt(const std::string& p) {
  return p.size() <= 60 ? p : p.substr(0, 57) + "...";
}

}  // namespace

ClipModel::ClipModel(const Bundle& bundle) : bundle_(bundle) {}

namespace {

// Every vector [n >= 1, width], floating point, finite.
void check_vectors(const Bundle& bundle, const TokenVectors& tokens) {
  const int64_t width = bundle.width();
  for (const auto& [name, v] : tokens) {
    if (!v.defined() || v.dim() != 2 || v.size(0) < 1) {
      throw bad_input("token vectors must be a [n_vectors, width] tensor").key(name)
          .found(v.defined() ? detail::shape_string(v.sizes()) : "undefined");
    }
    if (v.size(1) != width) {
      throw bad_input("token width " + std::to_string(v.size(1)) + " does not match bundle text.width " +
                      std::to_string(width) + " (bundle " + bundle.name() + ")")
          .key(name);
    }
    if (!v.is_floating_point()) throw bad_input("token vectors must be floating point").key(name);
    torch::NoGradGuard no_grad;
    if (!torch::isfinite(v).all().item<bool>()) throw bad_input("token vectors contain NaN or Inf").key(name);
  }
}

}  // namespace

void ClipModel::check_tokens(const TokenVectors& tokens) const {
  check_vectors(bundle_, tokens);
  for (const auto& [name, v] : tokens) bundle_.tokenizer().check_custom_token(name);
}

PromptBatch ClipModel::tokenize(const std::vector<std::string>& prompts, const TokenVectors& tokens) const {
  check_vectors(bundle_, tokens);  // the strings are checked once, as the table is built
  std::map<std::string, int64_t> lengths;
  for (const auto& [name, v] : tokens) lengths[name] = v.size(0);
  return tokenize(prompts, lengths);
}

PromptBatch ClipModel::tokenize(const std::vector<std::string>& prompts,
                                const std::map<std::string, int64_t>& token_lengths) const {
  const text::Tokenizer& tok = bundle_.tokenizer();
  PromptBatch batch;
  text::CustomTokens& custom = batch.custom;  // this request's table, in token_lengths' (sorted) order
  for (const auto& [name, n] : token_lengths) {
    if (n < 1) throw bad_input("a custom token needs at least one vector").key(name).found(std::to_string(n));
    custom.add(tok, name);
  }
  if (prompts.empty()) throw bad_input("no prompt to encode");
  const int64_t L = bundle_.context_length();
  const int64_t B = static_cast<int64_t>(prompts.size());
  const auto special = tok.special();

  batch.prompts = prompts;
  batch.ids = torch::empty({B, L}, torch::kLong);
  batch.eos_index = torch::empty({B}, torch::kLong);
  batch.truncated.assign(prompts.size(), 0);
  auto ids_acc = batch.ids.accessor<int64_t, 2>();
  auto eos_acc = batch.eos_index.accessor<int64_t, 1>();

  auto known = [&](const std::string& name) { return token_lengths.count(name) > 0; };
  std::string known_list;
  for (const auto& [name, n] : token_lengths) known_list += (known_list.empty() ? "" : ", ") + name;
  if (known_list.empty()) known_list = "none";

  for (int64_t b = 0; b < B; ++b) {
    const std::string& prompt = prompts[static_cast<size_t>(b)];
    for (const auto& w : angle_words(prompt)) {
      if (!known(w) && tok.piece_to_id(w) < 0) {
        throw bad_input("prompt uses the custom token " + w + ", which no token file defines (loaded: " +
                        known_list + ")")
            .key("prompt " + std::to_string(b + 1));
      }
    }
    text::Encoding enc = tok.encode(prompt, L, custom);
    bool multi = false;
    for (const auto& [pos, name] : enc.custom) {
      if (!known(name)) {
        throw bad_input("prompt uses the custom token " + name + " but no vectors were given for it")
            .key("prompt " + std::to_string(b + 1));
      }
      multi = multi || token_lengths.at(name) > 1;
    }
    std::vector<int64_t> row;
    int64_t eos = 0, truncated = 0;
    if (!multi) {
      row = enc.ids;
      eos = enc.eos_index;
      truncated = enc.truncated;
      for (const auto& [pos, name] : enc.custom) batch.slots.push_back({b, pos, name, 0});
    } else {
      // Expand each n-vector token to n positions, then truncate ourselves.
      text::Encoding full = tok.encode(prompt, enc.eos_index + enc.truncated + 1, custom);
      std::map<int64_t, std::string> at;
      for (const auto& [pos, name] : full.custom) at[pos] = name;
      std::vector<int64_t> content;
      std::vector<std::pair<std::string, int64_t>> tags;  // token and row, or "" for plain ids
      for (int64_t p = 1; p < full.eos_index; ++p) {
        auto it = at.find(p);
        if (it == at.end()) {
          content.push_back(full.ids[static_cast<size_t>(p)]);
          tags.emplace_back("", 0);
        } else {
          for (int64_t r = 0; r < token_lengths.at(it->second); ++r) {
            content.push_back(full.ids[static_cast<size_t>(p)]);
            tags.emplace_back(it->second, r);
          }
        }
      }
      const int64_t keep = std::min<int64_t>(static_cast<int64_t>(content.size()), L - 2);
      truncated = static_cast<int64_t>(content.size()) - keep;
      row.assign(static_cast<size_t>(L), special.pad);
      row[0] = special.bos;
      for (int64_t i = 0; i < keep; ++i) {
        row[static_cast<size_t>(i + 1)] = content[static_cast<size_t>(i)];
        const auto& tag = tags[static_cast<size_t>(i)];
        if (!tag.first.empty()) batch.slots.push_back({b, i + 1, tag.first, tag.second});
      }
      eos = keep + 1;
      row[static_cast<size_t>(eos)] = special.eos;
    }
    if (static_cast<int64_t>(row.size()) != L || eos <= 0 || eos >= L) {
      throw runtime_failure("tokenizer returned an encoding of the wrong length");
    }
    for (int64_t i = 0; i < L; ++i) ids_acc[b][i] = row[static_cast<size_t>(i)];
    eos_acc[b] = eos;
    batch.truncated[static_cast<size_t>(b)] = truncated;
    if (truncated > 0) {
      spdlog::warn("prompt {} (\"{}\") is longer than the context of {} tokens: cut {} token{} at the end", b + 1,
                   short_prompt(prompt), L, truncated, truncated == 1 ? "" : "s");
    }
  }
  for (const auto& s : batch.slots) batch.token_lengths[s.token] = token_lengths.at(s.token);
  return batch;
}

torch::Tensor ClipModel::embed(const PromptBatch& batch, const TokenVectors& tokens) const {
  const torch::Tensor& table = bundle_.token_embedding();
  const int64_t B = batch.ids.size(0), L = batch.ids.size(1), W = table.size(1);
  torch::Tensor ids = batch.ids.clone();
  const int64_t pad = bundle_.tokenizer().special().pad >= 0 ? bundle_.tokenizer().special().pad : 0;
  auto acc = ids.accessor<int64_t, 2>();
  for (const auto& s : batch.slots) acc[s.batch][s.position] = pad;  // replaced below
  if (ids.numel() && (ids.max().item<int64_t>() >= table.size(0) || ids.min().item<int64_t>() < 0)) {
    throw runtime_failure("token id outside the embedding table [0, " + std::to_string(table.size(0)) + ")");
  }
  torch::Tensor embeds = table.index_select(0, ids.reshape({-1}).to(table.device())).reshape({B, L, W});
  if (batch.slots.empty()) return embeds;

  std::vector<int64_t> bi, pi;
  std::vector<torch::Tensor> rows;
  for (const auto& s : batch.slots) {
    auto it = tokens.find(s.token);
    if (it == tokens.end()) throw bad_input("no vectors given for custom token " + s.token);
    const torch::Tensor& v = it->second;
    if (v.dim() != 2 || v.size(1) != W || s.row >= v.size(0)) {
      throw bad_input("token vectors do not match the tokenised prompts").key(s.token)
          .expected("[" + std::to_string(batch.token_lengths.at(s.token)) + ", " + std::to_string(W) + "]")
          .found(detail::shape_string(v.sizes()));
    }
    bi.push_back(s.batch);
    pi.push_back(s.position);
    rows.push_back(v[s.row]);
  }
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(table.device());
  torch::Tensor values = torch::stack(rows).to(table.device(), table.scalar_type());
  c10::List<c10::optional<torch::Tensor>> index;
  index.push_back(torch::tensor(bi, torch::kLong).to(opts));
  index.push_back(torch::tensor(pi, torch::kLong).to(opts));
  return at::index_put(embeds, index, values);
}

TextEncoding ClipModel::encode_embeds(const torch::Tensor& embeds, const torch::Tensor& eos_index) const {
  const int64_t L = bundle_.context_length(), W = bundle_.width();
  if (embeds.dim() != 3 || embeds.size(2) != W || embeds.size(1) > L) {
    throw bad_input("text embeddings have the wrong shape")
        .expected("[B, <= " + std::to_string(L) + ", " + std::to_string(W) + "]")
        .found(detail::shape_string(embeds.sizes()));
  }
  if (eos_index.dim() != 1 || eos_index.size(0) != embeds.size(0)) {
    throw bad_input("eos_index must be [B]").found(detail::shape_string(eos_index.sizes()));
  }
  auto out = detail::forward(bundle_.text_encoder(),
                             {embeds.to(bundle_.device(), bundle_.dtype()),
                              eos_index.to(bundle_.device(), torch::kLong)},
                             "text encoder");
  auto tuple = out.toTuple();
  TextEncoding enc;
  enc.hidden = tuple->elements().at(0).toTensor();
  enc.features = tuple->elements().at(1).toTensor().to(torch::kFloat32);
  enc.eos_index = eos_index.to(torch::kCPU, torch::kLong);
  return enc;
}

TextEncoding ClipModel::encode(const PromptBatch& batch, const TokenVectors& tokens) const {
  if (any_requires_grad(tokens, batch.token_lengths)) {
    return encode_embeds(embed(batch, tokens), batch.eos_index);
  }
  TextEncoding enc;
  {
    c10::InferenceMode guard;
    enc = encode_embeds(embed(batch, tokens), batch.eos_index);
  }
  // Ordinary tensors outside inference mode, so callers may use them in a loss.
  enc.hidden = enc.hidden.clone();
  enc.features = enc.features.clone();
  enc.eos_index = enc.eos_index.clone();
  return enc;
}

TextEncoding ClipModel::encode_text(const std::vector<std::string>& prompts, const TokenVectors& tokens) const {
  return encode(tokenize(prompts, tokens), tokens);
}

torch::Tensor ClipModel::encode_images(const torch::Tensor& pixels, int64_t batch_size) const {
  const int64_t S = bundle_.image_size();
  if (pixels.dim() != 4 || pixels.size(1) != 3 || pixels.size(2) != S || pixels.size(3) != S) {
    throw bad_input("image batch has the wrong shape for this bundle")
        .expected("[B, 3, " + std::to_string(S) + ", " + std::to_string(S) + "]")
        .found(detail::shape_string(pixels.sizes()));
  }
  if (batch_size < 1) batch_size = pixels.size(0) > 0 ? pixels.size(0) : 1;
  torch::Tensor out;
  {
    c10::InferenceMode guard;
    auto& module = bundle_.image_encoder();
    std::vector<torch::Tensor> parts;
    for (int64_t i = 0; i < pixels.size(0); i += batch_size) {
      auto chunk = pixels.slice(0, i, std::min(i + batch_size, pixels.size(0)))
                       .to(bundle_.device(), bundle_.dtype());
      parts.push_back(detail::forward(module, {chunk}, "image encoder").toTensor().to(torch::kFloat32));
    }
    out = parts.empty() ? torch::empty({0, bundle_.image_feature_dim()},
                                       torch::TensorOptions().device(bundle_.device()))
          : parts.size() == 1 ? parts[0] : torch::cat(parts);
  }
  return out.clone();
}

torch::Tensor ClipModel::encode_images(const std::vector<image::FloatImage>& images, int64_t batch_size) const {
  return encode_images(stack_images(images), batch_size);
}

torch::Tensor stack_images(const std::vector<image::FloatImage>& images) {
  if (images.empty()) return torch::empty({0, 3, 0, 0});
  const auto& first = images.front();
  torch::Tensor out = torch::empty({static_cast<int64_t>(images.size()), first.channels, first.height, first.width});
  float* dst = out.data_ptr<float>();
  const size_t per = static_cast<size_t>(first.channels) * first.height * first.width;
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& im = images[i];
    if (im.channels != first.channels || im.height != first.height || im.width != first.width ||
        im.data.size() != per) {
      throw bad_input("images of one batch must have the same size")
          .expected(std::to_string(first.channels) + "x" + std::to_string(first.height) + "x" +
                    std::to_string(first.width))
          .found(std::to_string(im.channels) + "x" + std::to_string(im.height) + "x" + std::to_string(im.width) +
                 " (image " + std::to_string(i + 1) + ")");
    }
    std::memcpy(dst + i * per, im.data.data(), per * sizeof(float));
  }
  return out;
}

torch::Tensor l2_normalize(const torch::Tensor& x) {
  return x / x.norm(2, -1, true).clamp_min(1e-12);
}

image::Preprocess image_preprocess(const Bundle& bundle) {
  const auto& spec = bundle.manifest().image;
  image::Preprocess pre;
  pre.size = static_cast<int>(spec.size);
  for (int c = 0; c < 3; ++c) {
    pre.mean[c] = static_cast<float>(spec.mean[c]);
    pre.std[c] = static_cast<float>(spec.std[c]);
  }
  return pre;
}

}  // namespace ctok::model
