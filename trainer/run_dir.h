// The run folder and safe file writes.
//
// A run writes into one folder: runs/<name> under the current directory, or
// the --out folder. Nothing is created before the config and the data have
// been checked, and an earlier run folder is never written into:
//  - runs/<name> taken: the run goes to runs/<name>-2 (then -3, ...);
//  - --out DIR: DIR must not exist or be an empty folder, else UserError.
// Files that must be whole or absent (resolved.yaml, summary.json) are
// written atomically: a temporary file beside the target, fsync, rename,
// fsync of the folder.
#pragma once

#include <string>

namespace kbit {

// Writes `text` to `path` atomically. Throws kbit::Error naming the path
// and the system error.
void write_file_atomic(const std::string& path, const std::string& text);

// Checks that `out` can become a run folder (absent, or an empty folder);
// throws UserError otherwise. Creates nothing.
void check_out_dir(const std::string& out);

// Creates the run folder and returns its path: `out` when not empty (checked
// again, so a folder filled in the meantime is refused), else the first
// free one of runs/<name>, runs/<name>-2, ... (creating runs/ if needed).
std::string create_run_dir(const std::string& name, const std::string& out);

}  // namespace kbit
