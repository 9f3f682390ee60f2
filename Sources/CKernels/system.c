#define _GNU_SOURCE
#include <sched.h>
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
