#include "ctok/token/cohort.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/progress.hpp"
#include "ctok/core/threads.hpp"
#include "learner_impl.hpp"

namespace ctok::token {
namespace fs = std::filesystem;

namespace {

struct Member {
  std::size_t index = 0;  // into the requests
  std::unique_ptr<Learner> learner;
  std::string checkpoint;
  double seconds_before = 0;
  bool active = true;
};

// Appends `b` to `all` with its custom tokens renamed to `name` (so members sharing a token
// string keep their own vectors).
void append_prompts(model::PromptBatch& all, const model::PromptBatch& b, const std::string& name) {
  const int64_t offset = all.ids.defined() ? all.ids.size(0) : 0;
  if (all.ids.defined() && all.ids.size(1) != b.ids.size(1)) {
    throw runtime_failure("cohort: prompt batches of different context lengths");
  }
  all.ids = all.ids.defined() ? torch::cat({all.ids, b.ids}) : b.ids;
  all.eos_index = all.eos_index.defined() ? torch::cat({all.eos_index, b.eos_index}) : b.eos_index;
  all.prompts.insert(all.prompts.end(), b.prompts.begin(), b.prompts.end());
  all.truncated.insert(all.truncated.end(), b.truncated.begin(), b.truncated.end());
  for (const auto& s : b.slots) {
    model::TokenSlot t = s;
    t.batch += offset;
    t.token = name;
    all.slots.push_back(t);
    all.token_lengths[name] = b.token_lengths.at(s.token);
  }
}

// One batched step of every active member. A member whose loss or gradient is not finite
// gets its error and leaves; the others step.
void cohort_step(std::vector<Member*>& members, std::vector<CohortResult>& results) {
  struct Part {
    Member* m;
    Learner::Impl* impl;
    Learner::Impl::StepPlan plan;
    torch::Tensor p, v;
    int64_t text_offset = 0, unet_offset = -1;
  };
  std::vector<Part> parts;
  model::PromptBatch all;
  model::TokenVectors tokens;
  std::vector<torch::Tensor> zt, t, ctx_rows;
  for (Member* m : members) {
    Part part{m, &m->learner->internals(), {}, {}, {}};
    Learner::Impl& im = *part.impl;
    part.plan = im.plan(im.step);
    part.p = im.param.detach().clone().requires_grad_(true);
    part.v = im.subspace ? expand(*im.subspace, part.p) : part.p;
    const std::string name = "#cohort" + std::to_string(parts.size());
    part.text_offset = all.ids.defined() ? all.ids.size(0) : 0;
    append_prompts(all, part.plan.prompts, name);
    tokens[name] = part.v;
    parts.push_back(std::move(part));
  }
  Learner::Impl& first = *parts.front().impl;
  auto enc = first.clip.encode(all, tokens);
  // The UNet over every inversion member's batch at once.
  std::vector<torch::Tensor> contexts;
  int64_t unet_rows = 0;
  for (auto& part : parts) {
    if (!part.impl->use_inv()) continue;
    const int64_t U = static_cast<int64_t>(part.plan.uniq.size());
    torch::Tensor hidden = enc.hidden.slice(0, part.text_offset, part.text_offset + U);
    contexts.push_back(hidden.index_select(0, part.plan.map_t));
    zt.push_back(part.plan.zt);
    t.push_back(part.plan.t);
    part.unet_offset = unet_rows;
    unet_rows += part.plan.B;
  }
  torch::Tensor pred_all;
  if (!contexts.empty()) {
    Learner::Impl* with_unet = nullptr;
    for (auto& part : parts)
      if (part.impl->use_inv() && !with_unet) with_unet = part.impl;
    pred_all = with_unet->diffusion->unet(torch::cat(zt), torch::cat(t), torch::cat(contexts));
  }
  torch::Tensor total;
  std::vector<StepLosses> outs(parts.size());
  std::vector<bool> ok(parts.size(), true);
  std::vector<torch::Tensor> leaves;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    Part& part = parts[i];
    const int64_t U = static_cast<int64_t>(part.plan.uniq.size());
    torch::Tensor feats = enc.features.slice(0, part.text_offset, part.text_offset + U);
    torch::Tensor pred = part.unet_offset >= 0 ? pred_all.slice(0, part.unet_offset, part.unet_offset + part.plan.B)
                                               : torch::Tensor();
    try {
      torch::Tensor loss = part.impl->finish(part.plan, part.v, feats, pred, outs[i]);
      total = total.defined() ? total + loss : loss;
      leaves.push_back(part.p);
    } catch (const Error& e) {
      ok[i] = false;
      results[part.m->index].error = e.what();
      part.m->active = false;
    }
  }
  if (!total.defined()) return;
  std::vector<torch::Tensor> grads = torch::autograd::grad({total}, leaves, {}, false, false, true);
  std::size_t g = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (!ok[i]) continue;
    Part& part = parts[i];
    torch::Tensor grad = grads[g++];
    if (!grad.defined()) grad = torch::zeros_like(part.p);
    try {
      part.impl->check_grad(grad.detach(), part.plan.s, outs[i]);
      part.impl->apply(outs[i], grad.detach());
    } catch (const Error& e) {
      results[part.m->index].error = e.what();
      part.m->active = false;
    }
  }
}

}  // namespace

int cohort_workers(const CohortOptions& options, std::size_t members) {
  if (options.workers < 0) throw bad_input("cohort: workers must be >= 0 (0: auto)").key("workers");
  int w = options.workers;
  if (w == 0) {
    const int cores = options.cores > 0 ? options.cores : hardware_threads();
    w = std::max(1, cores / std::max(1, at::get_num_threads()));
  }
  // Never more workers than tokens in flight (--cohort 1 is one token at a time) or tokens.
  const std::size_t cap = std::min(members, static_cast<std::size_t>(std::max(1, options.cohort)));
  return static_cast<int>(std::max<std::size_t>(1, std::min(static_cast<std::size_t>(w), cap)));
}

namespace {

// One worker's share of the requests (indices), learned in rounds of `per_round` members.
// Stops (members and later rounds marked interrupted) when options.stop is set. `done_mu`
// serialises on_done across workers.
void run_shard(const model::Bundle& bundle, const std::vector<LearnRequest>& requests,
               const std::vector<std::size_t>& shard, std::size_t per_round, const CohortOptions& options,
               std::vector<CohortResult>& results, Progress& progress, std::mutex& done_mu) {
  for (std::size_t round = 0; round < shard.size(); round += per_round) {
    std::vector<Member> members;
    for (std::size_t k = round; k < std::min(shard.size(), round + per_round); ++k) {
      const std::size_t i = shard[k];
      Member m;
      m.index = i;
      m.checkpoint = options.checkpoint_paths.empty() ? "" : options.checkpoint_paths[i];
      try {
        m.learner = std::make_unique<Learner>(bundle, requests[i]);
        if (!m.checkpoint.empty() && file_exists(m.checkpoint)) {
          m.seconds_before = m.learner->load_checkpoint(m.checkpoint);
          progress.advance(std::min(m.learner->steps_done(), requests[i].config.steps));
        }
      } catch (const Error& e) {
        results[i].error = e.what();
        progress.advance(requests[i].config.steps);
        continue;
      }
      members.push_back(std::move(m));
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&](const Member& m) {
      // Wall time is shared by the cohort: each member is charged the round's time so far.
      return m.seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    for (;;) {
      std::vector<Member*> active;
      for (auto& m : members) {
        if (m.active && m.learner->steps_done() >= m.learner->config().steps) {
          m.active = false;
          CohortResult& r = results[m.index];
          r.result.steps_done = m.learner->steps_done();
          r.result.seconds = elapsed(m);
          if (!m.learner->recent_losses().empty()) r.result.last = m.learner->recent_losses().back();
          finish_result(*m.learner, r.result);
          if (options.on_done) {
            std::lock_guard<std::mutex> lock(done_mu);
            options.on_done(m.index, r.result);
          }
        }
        if (m.active) active.push_back(&m);
      }
      if (active.empty()) break;
      cohort_step(active, results);
      progress.advance(static_cast<int64_t>(active.size()));
      const bool stop = options.stop && options.stop->load();
      for (Member* m : active) {
        if (!m->active || m->checkpoint.empty()) continue;
        const int s = m->learner->steps_done();
        const int every = m->learner->config().checkpoint_every;
        if (s < m->learner->config().steps && (stop || (every > 0 && s % every == 0))) {
          m->learner->save_checkpoint(m->checkpoint, elapsed(*m));
        }
      }
      if (stop) {
        for (Member* m : active) {
          if (!m->active) continue;
          CohortResult& r = results[m->index];
          r.result.status = LearnStatus::kInterrupted;
          r.result.steps_done = m->learner->steps_done();
          r.result.seconds = elapsed(*m);
          r.result.checkpoint_path = m->checkpoint;
        }
        for (std::size_t k = round + per_round; k < shard.size(); ++k)
          results[shard[k]].result.status = LearnStatus::kInterrupted;
        return;
      }
    }
  }
}

}  // namespace

std::vector<CohortResult> learn_cohort(const model::Bundle& bundle, const std::vector<LearnRequest>& requests,
                                       const CohortOptions& options) {
  std::vector<CohortResult> results(requests.size());
  if (!options.checkpoint_paths.empty() && options.checkpoint_paths.size() != requests.size()) {
    throw bad_input("cohort: one checkpoint path per request, or none").key("checkpoint_paths");
  }
  if (requests.empty()) return results;
  const int workers = cohort_workers(options, requests.size());
  // --cohort bounds the tokens in flight (memory); the workers split it.
  const std::size_t per_round = static_cast<std::size_t>(std::max(1, options.cohort / workers));
  int64_t total_steps = 0;
  for (const auto& r : requests) total_steps += r.config.steps;
  ProgressOptions po;
  po.label = "learn " + std::to_string(requests.size()) + " token(s)";
  po.unit = "step";
  po.enabled = options.progress && !log_quiet();
  Progress progress(total_steps, po);
  std::mutex done_mu;
  // Requests are dealt round-robin, so workers get similar shares of mixed configs.
  std::vector<std::vector<std::size_t>> shards(static_cast<std::size_t>(workers));
  for (std::size_t i = 0; i < requests.size(); ++i) shards[i % shards.size()].push_back(i);
  if (workers == 1) {
    run_shard(bundle, requests, shards[0], per_round, options, results, progress, done_mu);
  } else {
    spdlog::debug("cohort: {} workers, up to {} token(s) each per batched step, {} intra-op thread(s)", workers,
                  per_round, at::get_num_threads());
    std::vector<std::exception_ptr> errors(shards.size());
    std::vector<std::thread> pool;
    for (std::size_t w = 0; w < shards.size(); ++w) {
      pool.emplace_back([&, w] {
        try {
          run_shard(bundle, requests, shards[w], per_round, options, results, progress, done_mu);
        } catch (...) {
          errors[w] = std::current_exception();
        }
      });
    }
    for (auto& t : pool) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }
  progress.finish();
  return results;
}

}  // namespace ctok::token
