// Shared plumbing for the ctok-* tools (private to tools/, header-only): the common
// options and the one place where errors become messages and exit codes.
//
//   int main(int argc, char** argv) {
//     return ctok::tool::run_tool(argc, argv, "What the tool does.", [&](CLI::App& app) {
//       ctok::tool::CommonOptions common;
//       ctok::tool::add_common_options(app, common);
//       std::string out;
//       app.add_option("--out", out, "output file")->required();
//       ctok::tool::parse(app, argc, argv, common);   // parse, then logging + threads
//       ... one library call ...
//       return 0;
//     });
//   }
//
// Exit codes (docs/architecture.md): 0 success, 1 runtime failure, 2 bad usage or bad
// input. Messages go to stderr as "ctok-xxx: error: <what>".
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/core/log.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/core/version.hpp"
#include "ctok/model/manifest.hpp"

namespace ctok::tool {

struct CommonOptions {
  std::string bundle;             // --bundle DIR; empty: model::default_bundle_dir()
  std::string device = "cpu";     // --device cpu | cuda | cuda:N
  int threads = 0;                // --threads N; 0: auto (model::thread_plan of the bundle)
  std::optional<uint64_t> seed;   // --seed N; tools pick their documented default when unset
  std::string config;             // --config FILE.json; flags given on the command line override it
  int verbose = 0;                // -v (repeatable)
  int quiet = 0;                  // -q

  // The bundle directory to use: --bundle, else $CTOK_BUNDLE / the shipped default.
  std::string bundle_dir() const { return bundle.empty() ? model::default_bundle_dir() : bundle; }
  int verbosity() const { return verbose - quiet; }
};

// Which common options a tool registers (bit mask).
enum CommonFlag : unsigned {
  kBundle = 1u << 0,
  kDevice = 1u << 1,
  kThreads = 1u << 2,
  kSeed = 1u << 3,
  kConfig = 1u << 4,
  kVerbosity = 1u << 5,
  kAllCommon = 0x3fu,
};

inline void add_common_options(CLI::App& app, CommonOptions& o, unsigned which = kAllCommon) {
  if (which & kBundle) {
    app.add_option("--bundle", o.bundle, "model bundle directory (default: $CTOK_BUNDLE, else the shipped models/default)")
        ->type_name("DIR");
  }
  if (which & kDevice) {
    app.add_option("--device", o.device, "cpu | cuda | cuda:N")
        ->type_name("DEV")
        ->check(CLI::Validator(
            [](std::string& v) -> std::string {
              if (v == "cpu" || v == "cuda") return "";
              if (v.rfind("cuda:", 0) == 0 && v.size() > 5 &&
                  v.find_first_not_of("0123456789", 5) == std::string::npos) {
                return "";
              }
              return "expected cpu, cuda or cuda:N, found \"" + v + "\"";
            },
            "DEV", "device"))
        ->capture_default_str();
  }
  if (which & kThreads) {
    app.add_option("--threads", o.threads,
                   "CPU threads for libtorch (0 = auto: 1 for a small bundle such as the default, whose layers "
                   "are too small to split, every core for a big one; OpenBLAS keeps 1 thread on a small bundle)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
  }
  if (which & kSeed) app.add_option("--seed", o.seed, "random seed");
  if (which & kConfig) {
    app.add_option("--config", o.config, "JSON config file (flags given here override it)")
        ->type_name("FILE.json")
        ->check(CLI::ExistingFile);
  }
  if (which & kVerbosity) {
    app.add_flag("-v,--verbose", o.verbose, "more log output (repeat for trace)");
    app.add_flag("-q,--quiet", o.quiet, "warnings and errors only; no progress bars");
  }
}

// Logging first (so thread set-up can log), then threads.
inline void apply_common_options(const CommonOptions& o, unsigned which = kAllCommon) {
  init_logging(o.verbosity());
  if (which & kThreads) {
    const model::ThreadPlan plan = model::thread_plan(o.bundle_dir(), o.threads);
    spdlog::debug("thread plan of a {} bundle ({})", plan.small_bundle ? "small" : "big", o.bundle_dir());
    configure_threads(plan.threads, plan.blas_threads);
  }
}

// Parse the command line; CLI::ParseError propagates to run_tool (exit 2).
inline void parse(CLI::App& app, int argc, char** argv, const CommonOptions& o, unsigned which = kAllCommon) {
  app.parse(argc, argv);
  apply_common_options(o, which);
}

// bad_input unless `path` is free or `force` is set.
// An option naming one value of a library enum (model::Sampler, ...): the help lists the
// choices from the enum's table and shows the current value as the default; a wrong name
// is bad_input keyed by the enum ("unknown sampler", exit 2).
template <typename E>
CLI::Option* add_enum_option(CLI::App& app, const std::string& flag, E& field, const std::string& help) {
  return app
      .add_option_function<std::string>(
          flag, [&field](const std::string& name) { field = model::parse_enum<E>(name); },
          help + ": " + model::enum_choices<E>())
      ->default_str(model::enum_name(field))
      ->type_name("NAME");
}

inline void check_overwrite(const std::string& path, bool force) {
  if (!force && std::filesystem::exists(path)) {
    throw bad_input("output exists (use --force to overwrite)").file(path);
  }
}

inline std::string tool_name(const char* argv0) {
  std::string name = argv0 ? std::filesystem::path(argv0).filename().string() : std::string();
  return name.empty() ? std::string("ctok") : name;
}

// Builds the app (with --version), runs `body`, and turns every error into a message on
// stderr and an exit code: CLI11 usage errors -> 2 (--help/--version -> 0), ctok::Error ->
// its exit_code(), any other exception -> 1.
inline int run_tool(int argc, char** argv, const std::string& description,
                    const std::function<int(CLI::App&)>& body) {
  const std::string name = tool_name(argc > 0 ? argv[0] : nullptr);
  CLI::App app{description, name};
  app.set_version_flag("--version", std::string(name) + " " + version_string());
  try {
    return body(app);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help, --version
    std::cerr << name << ": error: " << e.what() << "\nRun with --help for more information.\n";
    return 2;
  } catch (const Error& e) {
    std::cerr << name << ": error: " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << name << ": error: " << e.what() << "\n";
    return 1;
  } catch (...) {
    std::cerr << name << ": error: unknown exception\n";
    return 1;
  }
}

}  // namespace ctok::tool
