#pragma once
// An allocator that wipes memory before giving it back. For containers that briefly hold a
// secret on its way somewhere safer (a request body carrying a volume key, the JSON parsed
// from it): every buffer they grow out of is wiped too, not only the last one.
#include <string.h>  // explicit_bzero

#include <cstddef>
#include <memory>
#include <string>

namespace volgate {

template <class T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() = default;
  template <class U>
  WipingAllocator(const WipingAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    ::explicit_bzero(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  friend bool operator==(const WipingAllocator&, const WipingAllocator&) { return true; }
};

// Short strings live inside the object (no allocation) and are not wiped by this: secrets are
// longer than the small-string buffer (15 bytes) or must be wiped in place.
using WipingString = std::basic_string<char, std::char_traits<char>, WipingAllocator<char>>;

}  // namespace volgate
