// Umbrella header for the lpm component.
#pragma once
#include "lpm/route_table.h"
