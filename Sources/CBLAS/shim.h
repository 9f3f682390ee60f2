#pragma once
#include <cblas.h>
// OpenBLAS extensions used to pick one level of parallelism at a time.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
