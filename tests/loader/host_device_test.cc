#include "loader/host_device.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "loader/device.h"
#include "tests/util/small_shm.h"

namespace loadstar::loader {
namespace {

TEST(HostDeviceTest, AllocateCopyReadFree) {
  HostDevice device(3, 1 << 20);
  EXPECT_EQ(device.name(), "host:3");
  auto a = device.Allocate(10000);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(device.free_memory(), (1u << 20) - 10000);
  std::string data(5000, 'x');
  auto ticket = device.CopyToDeviceAsync(*a, 5000, data.data(), data.size());
  ASSERT_TRUE(ticket.ok());
  ASSERT_TRUE(device.Wait(*ticket).ok());
  std::string back(5000, '\0');
  ASSERT_TRUE(device.CopyToHost(back.data(), *a, 5000, 5000).ok());
  EXPECT_EQ(back, data);
  // Out of range copies are refused, not performed.
  EXPECT_EQ(device.CopyToDeviceAsync(*a, 6000, data.data(), data.size()).status().code(),
            absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(device.Free(*a).ok());
  EXPECT_EQ(device.free_memory(), 1u << 20);
  EXPECT_EQ(device.Free(*a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(device.live_allocations(), 0);
}

TEST(HostDeviceTest, EnforcesMemoryLimit) {
  HostDevice device(0, 64 << 10);
  auto a = device.Allocate(40 << 10);
  ASSERT_TRUE(a.ok());
  auto b = device.Allocate(40 << 10);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(b.status().message()).find("host:0"), std::string::npos);
  ASSERT_TRUE(device.Free(*a).ok());
  EXPECT_TRUE(device.Allocate(40 << 10).ok());
}

TEST(HostDeviceTest, ExportIsMappableByAnotherProcess) {
  HostDevice device(0, 1 << 20);
  auto a = device.Allocate(3 * 4096 + 17);
  ASSERT_TRUE(a.ok());
  std::string data(a->size, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(device.CopyToDeviceAsync(*a, 0, data.data(), data.size()).ok());
  auto handle = device.Export(*a);
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(handle->kind, DeviceKind::kHost);
  EXPECT_EQ(handle->size, a->size);
  ASSERT_EQ(handle->shm_name.rfind("/loadstar-", 0), 0u);

  // A second, independent mapping (what a consumer process does).
  int fd = ::shm_open(handle->shm_name.c_str(), O_RDONLY, 0);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, handle->size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  EXPECT_EQ(std::memcmp(map, data.data(), data.size()), 0);
  ::munmap(map, handle->size);

  // And a child process.
  // The child leaves with a raw exit_group: sanitizer runtimes intercept _exit and may
  // rewrite the status with reports inherited from the parent.
  pid_t pid = ::fork();
  if (pid == 0) {
    auto leave = [](int code) { ::syscall(SYS_exit_group, code); };
    int cfd = ::shm_open(handle->shm_name.c_str(), O_RDONLY, 0);
    if (cfd < 0) leave(2);
    void* cmap = ::mmap(nullptr, handle->size, PROT_READ, MAP_SHARED, cfd, 0);
    if (cmap == MAP_FAILED) leave(3);
    leave(std::memcmp(cmap, data.data(), data.size()) == 0 ? 0 : 4);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);

  // Free unlinks the name.
  ASSERT_TRUE(device.Free(*a).ok());
  EXPECT_LT(::shm_open(handle->shm_name.c_str(), O_RDONLY, 0), 0);
}

TEST(HostDeviceTest, ParallelCopiesIntoDisjointRanges) {
  HostDevice device(0, 64 << 20);
  const uint64_t part = 1 << 20;
  auto a = device.Allocate(8 * part);
  ASSERT_TRUE(a.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::string src(part, static_cast<char>('a' + t));
      auto ticket = device.CopyToDeviceAsync(*a, t * part, src.data(), part);
      ASSERT_TRUE(ticket.ok());
      ASSERT_TRUE(device.Wait(*ticket).ok());
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(static_cast<char*>(a->ptr)[t * part + part / 2], static_cast<char>('a' + t));
  }
}

// A /dev/shm too small for the model: the copy that runs out is RESOURCE_EXHAUSTED
// (the populate fails) and nothing faults with SIGBUS.
TEST(HostDeviceTest, FullShmIsResourceExhaustedNotSigbus) {
  loadstar::testing::SmallShmResult r = loadstar::testing::RunWithSmallShm(1 << 20, []() -> std::string {
    HostDevice device(0, 64 << 20);
    auto a = device.Allocate(8 << 20);
    if (!a.ok()) return "Allocate: " + a.status().ToString();
    std::string src(8 << 20, 'x');
    auto ticket = device.CopyToDeviceAsync(*a, 0, src.data(), src.size());
    if (ticket.ok()) return "the copy into a full /dev/shm succeeded";
    if (ticket.status().code() != absl::StatusCode::kResourceExhausted ||
        std::string(ticket.status().message()).find("host:0") == std::string::npos) {
      return "not RESOURCE_EXHAUSTED naming host:0: " + ticket.status().ToString();
    }
    if (!device.Free(*a).ok()) return "Free failed";
    return "";
  });
  if (r.namespace_unavailable) GTEST_SKIP() << "cannot mount a small tmpfs over /dev/shm here";
  EXPECT_EQ(r.signal, 0) << "the child died of signal " << r.signal;
  EXPECT_EQ(r.failure, "");
}

TEST(HostDeviceTest, DestructorReleasesEverything) {
  std::string name;
  {
    HostDevice device(0, 1 << 20);
    auto a = device.Allocate(4096);
    ASSERT_TRUE(a.ok());
    name = device.Export(*a)->shm_name;
  }
  EXPECT_LT(::shm_open(name.c_str(), O_RDONLY, 0), 0);
}

TEST(HostDeviceTest, RetainedMemoryIsReusedUnderAFreshName) {
  HostDevice device(0, 1 << 20, /*retain_bytes=*/256 << 10);
  auto a = device.Allocate(100 << 10);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(device.ReadsInPlace(*a));  // fresh: filled by pwrite
  std::string first(100 << 10, 'a');
  ASSERT_TRUE(device.CopyToDeviceAsync(*a, 0, first.data(), first.size()).ok());
  std::string old_name = device.Export(*a)->shm_name;
  void* old_ptr = a->ptr;
  ASSERT_TRUE(device.Free(*a).ok());
  EXPECT_EQ(device.retained_bytes(), 100u << 10);
  EXPECT_LT(::shm_open(old_name.c_str(), O_RDONLY, 0), 0) << "Free removes the name";
  EXPECT_EQ(device.free_memory(), 1u << 20);

  auto b = device.Allocate(90 << 10);  // fits the retained region
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->ptr, old_ptr);
  EXPECT_EQ(device.retained_bytes(), 0u);
  EXPECT_TRUE(device.ReadsInPlace(*b));
  std::string second(90 << 10, 'b');
  ASSERT_TRUE(device.CopyToDeviceAsync(*b, 0, second.data(), second.size()).ok());
  auto handle = device.Export(*b);
  ASSERT_TRUE(handle.ok());
  EXPECT_NE(handle->shm_name, old_name);
  int fd = ::shm_open(handle->shm_name.c_str(), O_RDONLY, 0);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, handle->size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  EXPECT_EQ(std::memcmp(map, second.data(), second.size()), 0);
  ::munmap(map, handle->size);

  // Too small to take the retained 100 KiB region for a 20 KiB request (over 2x): fresh.
  ASSERT_TRUE(device.Free(*b).ok());
  auto c = device.Allocate(20 << 10);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->ptr, old_ptr);
  EXPECT_FALSE(device.ReadsInPlace(*c));
  // Over the retain budget: unmapped at once.
  auto big = device.Allocate(300 << 10);
  ASSERT_TRUE(big.ok());
  ASSERT_TRUE(device.Free(*big).ok());
  EXPECT_EQ(device.retained_bytes(), 100u << 10);
}

// A child that exited stands for a worker killed with SIGKILL: its objects must go, while
// the objects of this (live) process stay.
TEST(HostDeviceTest, RemoveStaleHostShmRemovesOnlyDeadProcessesObjects) {
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::syscall(SYS_exit_group, 0);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);

  std::string dead_name = "/loadstar-" + std::to_string(child) + "-12345-0";
  int fd = ::shm_open(dead_name.c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);

  HostDevice device(0, 1 << 20);
  absl::StatusOr<Allocation> live = device.Allocate(4096);
  ASSERT_TRUE(live.ok()) << live.status();
  absl::StatusOr<ExportedHandle> handle = device.Export(*live);
  ASSERT_TRUE(handle.ok()) << handle.status();

  // Not a count: a test process running beside this one (ctest -j) may sweep the dead
  // object first. What must hold is that it is gone and the live one is not.
  RemoveStaleHostShm();
  int dead_fd = ::shm_open(dead_name.c_str(), O_RDWR, 0600);
  EXPECT_LT(dead_fd, 0) << dead_name << " of a dead process was kept";
  if (dead_fd >= 0) {
    ::close(dead_fd);
    ::shm_unlink(dead_name.c_str());
  }
  int live_fd = ::shm_open(handle->shm_name.c_str(), O_RDWR, 0600);
  EXPECT_GE(live_fd, 0) << handle->shm_name << " of this live process was removed";
  if (live_fd >= 0) ::close(live_fd);
  EXPECT_TRUE(device.Free(*live).ok());
}

TEST(CreateDevicesTest, Specs) {
  auto two = CreateDevices("host:2", 1 << 20);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1]->name(), "host:1");
  EXPECT_EQ((*two)[1]->total_memory(), 1u << 20);
  auto automatic = CreateDevices("auto", 1 << 20);
  ASSERT_TRUE(automatic.ok());
  EXPECT_GE(automatic->size(), 1u);
#ifndef LOADSTAR_HAVE_CUDA_MODULE
  EXPECT_EQ((*automatic)[0]->kind(), DeviceKind::kHost);
  auto cuda = CreateDevices("cuda");
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(std::string(cuda.status().message()), "loadstar was built without CUDA");
#else
  // Built with CUDA: "cuda" goes through the CUDA module. Without a GPU (this machine) it
  // is FailedPrecondition naming why, and "auto" fell back to a host device.
  auto cuda = CreateDevices("cuda");
  if (!cuda.ok()) {
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
    EXPECT_EQ((*automatic)[0]->kind(), DeviceKind::kHost);
  }
#endif
  for (const char* bad : {"host:0", "host:x", "host:2x", "gpu", "host:65", ""}) {
    EXPECT_EQ(CreateDevices(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace loadstar::loader
