#pragma once
// Memory for the small objects a data path makes and destroys once per request (a device's
// operation state, a request's bookkeeping), kept on a free list per thread instead of going
// back to the heap, so that a request in the steady state allocates nothing.
//
// An object is made on one thread and may be destroyed on another: its memory then joins that
// thread's list. Each list holds at most kKeep blocks (beyond that they are freed), so a thread
// that only destroys cannot hoard memory; a worker's list settles at the number of requests it
// has in flight at once.
#include <cstddef>
#include <new>
#include <utility>
#include <vector>

namespace volgate {

template <class T>
class PerThreadPool {
 public:
  static constexpr size_t kKeep = 1024;

  template <class... Args>
  static T* make(Args&&... args) {
    void* memory = take();
    try {
      return ::new (memory) T{std::forward<Args>(args)...};
    } catch (...) {
      give(memory);
      throw;
    }
  }

  static void destroy(T* object) noexcept {
    if (!object) return;
    object->~T();
    give(object);
  }

 private:
  struct FreeList {
    std::vector<void*> blocks;
    ~FreeList() {
      for (void* block : blocks) ::operator delete(block, std::align_val_t{alignof(T)});
      gone() = true;
    }
  };
  // Set once the thread's list is destroyed (thread exit), for an object destroyed after that:
  // a plain flag, which stays readable while the thread's other objects are torn down.
  static bool& gone() {
    thread_local bool flag = false;
    return flag;
  }
  static FreeList& free_list() {
    thread_local FreeList list;
    return list;
  }
  static void* take() {
    if (gone()) return ::operator new(sizeof(T), std::align_val_t{alignof(T)});
    auto& list = free_list().blocks;
    if (list.empty()) return ::operator new(sizeof(T), std::align_val_t{alignof(T)});
    void* block = list.back();
    list.pop_back();
    return block;
  }
  static void give(void* block) noexcept {
    if (gone()) return ::operator delete(block, std::align_val_t{alignof(T)});
    auto& list = free_list().blocks;
    if (list.size() < kKeep) {
      try {
        if (list.capacity() == 0) list.reserve(kKeep);  // once per thread: pushes never allocate
        list.push_back(block);
        return;
      } catch (const std::bad_alloc&) {
      }
    }
    ::operator delete(block, std::align_val_t{alignof(T)});
  }
};

}  // namespace volgate
