#pragma once
// Counts every allocation of a test program, on any thread, so that a test can show that a path
// makes none: replaces the global operator new and delete. Include it in one file of the
// program only (a replacement is defined once per program).
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

// The replacements pair malloc with free by design; GCC, seeing them inlined next to its own
// new, warns of a mismatch that is not there.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

inline std::atomic<uint64_t> allocations{0};

void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t align) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  const auto a = static_cast<size_t>(align);
  if (void* p = std::aligned_alloc(a, (size + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
