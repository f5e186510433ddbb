/*
 * kernel-espgw: a charon plugin that provides only the kernel-ipsec part, on
 * espgw's control socket. charon keeps kernel-netlink for the host's
 * addresses and routes (kernel-net).
 *
 * How charon picks between two kernel-ipsec providers (strongSwan 5.9.8,
 * src/libstrongswan/plugins/plugin_loader.c and
 * src/libcharon/kernel/kernel_interface.c):
 *
 * - Every plugin's features are loaded in plugin load order
 *   (load_features() walks the loaded plugins in order). A kernel-ipsec
 *   feature's callback is kernel_ipsec_register(), which calls
 *   charon->kernel->add_ipsec_interface(): it constructs the provider only if
 *   none is set yet, so THE FIRST kernel-ipsec PROVIDER IN LOAD ORDER WINS.
 *   Any later one returns FALSE without being constructed and the loader
 *   logs "feature CUSTOM:kernel-ipsec in plugin 'kernel-netlink' failed to
 *   load" (harmless: kernel-netlink's kernel-net feature is a separate slot,
 *   add_net_interface, and still loads).
 * - Load order with `charon.load_modular = yes` (Debian's /etc/strongswan.conf):
 *   every `charon.plugins.NAME` section whose `load` is true or an integer is
 *   loaded; plugins are sorted by that integer, highest first (`load = yes`
 *   counts as 1), then by their position in charon's compiled-in default
 *   list (`charon.load`, else the PLUGINS list of the build; kernel-libipsec
 *   comes before kernel-netlink there), a plugin not in that list ranking
 *   with the list's first entry, then by name. So `load = 2` in
 *   /etc/strongswan.d/charon/kernel-espgw.conf puts kernel-espgw before
 *   kernel-netlink (`load = yes`) whatever the names.
 * - Without load_modular, `charon.load` is the list, in its order: name
 *   kernel-espgw before kernel-netlink.
 * - Unloading (charon exit) calls remove_ipsec_interface() with the
 *   constructor: only the winner's is destroyed.
 */

#include "kernel_espgw_plugin.h"
#include "kernel_espgw_ipsec.h"

#include <daemon.h>

typedef struct private_kernel_espgw_plugin_t private_kernel_espgw_plugin_t;

struct private_kernel_espgw_plugin_t {
	kernel_espgw_plugin_t public;
};

METHOD(plugin_t, get_name, char*,
	private_kernel_espgw_plugin_t *this)
{
	return "kernel-espgw";
}

METHOD(plugin_t, get_features, int,
	private_kernel_espgw_plugin_t *this, plugin_feature_t *features[])
{
	static plugin_feature_t f[] = {
		PLUGIN_CALLBACK(kernel_ipsec_register, kernel_espgw_ipsec_create),
			PLUGIN_PROVIDE(CUSTOM, "kernel-ipsec"),
	};
	*features = f;
	return countof(f);
}

METHOD(plugin_t, destroy, void,
	private_kernel_espgw_plugin_t *this)
{
	free(this);
}

plugin_t *kernel_espgw_plugin_create()
{
	private_kernel_espgw_plugin_t *this;

	INIT(this,
		.public = {
			.plugin = {
				.get_name = _get_name,
				.get_features = _get_features,
				.destroy = _destroy,
			},
		},
	);
	return &this->public.plugin;
}
