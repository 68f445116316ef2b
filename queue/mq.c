/* Placeholder: replaced by the queue implementation. */
#include "mq.h"
