/*
 * kernel-espgw: a charon plugin whose kernel-ipsec provider is espgw.
 */
#ifndef KERNEL_ESPGW_PLUGIN_H_
#define KERNEL_ESPGW_PLUGIN_H_

#include <library.h>
#include <plugins/plugin.h>

typedef struct kernel_espgw_plugin_t kernel_espgw_plugin_t;

struct kernel_espgw_plugin_t {
	/** Implements plugin interface */
	plugin_t plugin;
};

#endif /* KERNEL_ESPGW_PLUGIN_H_ */
