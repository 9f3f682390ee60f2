#define _GNU_SOURCE
#include <sched.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include "CKernels.h"

int gs_affinity_cpu_count(void) {
#ifdef __linux__
    // A scheduler (Slurm's task/affinity or cgroup cpuset, `taskset`, a container's cpuset) narrows
    // the CPUs this process may run on; sysconf's online count does not see that.
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
    return 0;
}

int gs_retain_freed_memory(void) {
#if defined(__GLIBC__)
    // No mmap for large blocks and no trimming of the heap's top: freed tensors stay mapped for
    // the next tile (see MemoryPolicy.retainFreedMemory).
    return mallopt(M_MMAP_MAX, 0) && mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
#else
    return 0;
#endif
}
