// The native side of `faultline bench`: a reference userfaultfd handler in C
// (one faulting pthread, one handler pthread), a memcpy baseline, and the
// spin-before-sleep readiness wait the TypeScript host handler uses.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace faultline {

// How many non-blocking reads a handler tries before it sleeps in poll(). On a
// 2-vCPU VM (MISSING + COPY 4 KiB, unpinned) it made 17-21k faults/s sleeping
// at once and 50-64k spinning, the same from 100 to 50,000 tries.
constexpr long kBenchDefaultSpin = 2000;

struct BenchConfig {
  std::string row;             // missing-copy, missing-zeropage, minor-continue, wp, hugetlb-copy
  size_t region_bytes = 0;
  size_t bytes_per_fault = 0;  // 0: the row's page size
  long spin = kBenchDefaultSpin;
  int vcpus = 1;               // faulting threads, each over an equal slice of the region
  // Thread placement: none (the scheduler's), same (both on the caller's CPU), split (the faulting
  // thread on the caller's CPU, the handler on the next one).
  std::string pin = "none";
};

struct BenchResult {
  uint64_t faults = 0;  // page-fault messages the handler resolved
  uint64_t polls = 0;   // times the handler gave up spinning and called poll() (which may sleep)
  int64_t ns = 0;       // first touch to last touch completed (CLOCK_MONOTONIC)
  std::string error;    // empty on success
};

// Runs one row synchronously: sets up, faults, verifies, tears down. Never throws.
BenchResult RunBenchHandler(const BenchConfig& config);

struct MemcpyResult {
  int64_t ns = 0;        // into a prefaulted destination
  int64_t ns_fresh = 0;  // into a fresh (not yet faulted) destination
  std::string error;
};

MemcpyResult RunBenchMemcpy(size_t region_bytes, size_t chunk_bytes);

// poll(fd, POLLIN, 0) up to `tries` times: the revents, 0 when never readable, or -errno.
int SpinReadable(int fd, long tries);

// Adds benchHandler, benchMemcpy and spinReadable to the addon's exports.
void RegisterBench(Napi::Env env, Napi::Object exports);

}  // namespace faultline
