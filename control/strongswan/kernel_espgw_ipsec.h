/*
 * kernel-espgw: charon's kernel_ipsec_t on espgw's control socket.
 */
#ifndef KERNEL_ESPGW_IPSEC_H_
#define KERNEL_ESPGW_IPSEC_H_

#include <library.h>
#include <kernel/kernel_ipsec.h>

typedef struct kernel_espgw_ipsec_t kernel_espgw_ipsec_t;

struct kernel_espgw_ipsec_t {
	/** Implements kernel_ipsec_t */
	kernel_ipsec_t interface;
};

/** Constructor, registered as charon's kernel-ipsec provider. */
kernel_espgw_ipsec_t *kernel_espgw_ipsec_create();

#endif /* KERNEL_ESPGW_IPSEC_H_ */
