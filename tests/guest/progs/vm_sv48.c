/* Sv48 virtual memory tests (see vm_common.h). */
#define LEVELS 4
#include "vm_common.h"
