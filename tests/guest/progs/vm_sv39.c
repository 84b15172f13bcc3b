/* Sv39 virtual memory tests (see vm_common.h). */
#define LEVELS 3
#include "vm_common.h"
