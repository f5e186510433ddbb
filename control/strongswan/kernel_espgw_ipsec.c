/*
 * kernel-espgw: charon's kernel_ipsec_t on espgw's control socket
 * (docs/control-api.md; the mapping is issue 11's protocol, §8).
 *
 * - Requests are synchronous on one connection under a mutex, each with its
 *   own "id" and a deadline (charon.plugins.kernel-espgw.timeout, ms); a
 *   timeout or a broken connection closes it, the next request reconnects.
 * - A second connection subscribes to espgw's events; its thread turns
 *   sa-expire into charon->kernel->expire() and reconnects with backoff when
 *   espgw restarts.
 * - SPIs are network order in charon's calls (id->spi, get_spi's result,
 *   expire()); espgw_client takes and returns host order.
 * - Policies are recorded here only: espgw keeps the routes (route-based), and
 *   a policy-based tunnel gets its selectors with add-sa.
 */

#include "kernel_espgw_ipsec.h"
#include "espgw_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <unistd.h>

#include <daemon.h>
#include <collections/linked_list.h>
#include <threading/mutex.h>
#include <threading/thread.h>

#define DEFAULT_SOCKET "/run/espgw/espgw.sock"
#define DEFAULT_TIMEOUT_MS 5000

typedef struct private_kernel_espgw_ipsec_t private_kernel_espgw_ipsec_t;

/** An SA this plugin installed (for query_policy and events). */
typedef struct {
	uint32_t spi;          /* host order */
	host_t *dst;
	bool inbound;
	uint32_t reqid;
} sa_entry_t;

/** An IPsec policy charon installed (recorded, refcounted like kernel-netlink's). */
typedef struct {
	policy_dir_t dir;
	traffic_selector_t *src_ts, *dst_ts;
	uint32_t reqid;
	u_int refs;
} policy_entry_t;

struct private_kernel_espgw_ipsec_t {
	kernel_espgw_ipsec_t public;

	char *socket_path;
	int timeout_ms;

	/** the request connection */
	mutex_t *conn_lock;
	int fd;
	espgw_reader_t reader;
	uint64_t next_id;

	/** SAs and policies, under state_lock */
	mutex_t *state_lock;
	linked_list_t *sas;
	linked_list_t *policies;

	/** the events thread */
	thread_t *events;
	volatile bool stop;
};

/* ------------------------------------------------------------ transport */

static void close_conn(private_kernel_espgw_ipsec_t *this)
{
	if (this->fd >= 0)
	{
		close(this->fd);
	}
	this->fd = -1;
	espgw_reader_reset(&this->reader);
}

/** A connection espgw has closed (it restarted) reads as EOF at once. */
static bool conn_alive(private_kernel_espgw_ipsec_t *this)
{
	char c;
	ssize_t n;

	if (this->fd < 0)
	{
		return FALSE;
	}
	n = recv(this->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

static bool ensure_conn(private_kernel_espgw_ipsec_t *this, char *why, size_t why_len)
{
	if (conn_alive(this))
	{
		return TRUE;
	}
	close_conn(this);
	this->fd = espgw_connect(this->socket_path);
	if (this->fd < 0)
	{
		snprintf(why, why_len, "cannot reach espgw at %s: %s", this->socket_path,
				 strerror(errno));
		return FALSE;
	}
	espgw_reader_init(&this->reader, this->fd);
	return TRUE;
}

/**
 * Sends one request line and waits for its reply. Returns the reply's status;
 * on a transport failure ESPGW_REPLY_MALFORMED with reply->error saying why.
 * The line is wiped and freed here (it may hold a key).
 */
static espgw_reply_status_t request(private_kernel_espgw_ipsec_t *this,
									espgw_line_t *line, uint64_t id,
									espgw_expect_t expect, espgw_reply_t *reply)
{
	espgw_reply_status_t st = ESPGW_REPLY_MALFORMED;
	int64_t deadline;
	const char *text;
	size_t len;
	int attempt, r, err;

	memset(reply, 0, sizeof(*reply));
	this->conn_lock->lock(this->conn_lock);
	deadline = espgw_now_ms() + this->timeout_ms;
	for (attempt = 0; ; attempt++)
	{
		if (!ensure_conn(this, reply->error, sizeof(reply->error)))
		{
			goto out;
		}
		if (espgw_send_all(this->fd, line->text, line->len, deadline) == 0)
		{
			break;
		}
		/* espgw went away since our last request: nothing of this one was read, resend once */
		err = errno;
		snprintf(reply->error, sizeof(reply->error), "sending to espgw failed: %s",
				 strerror(err));
		close_conn(this);
		if (attempt == 1 || err == ETIMEDOUT)
		{
			goto out;
		}
	}
	for (;;)
	{
		r = espgw_read_line(&this->reader, deadline, &text, &len);
		if (r <= 0)
		{
			snprintf(reply->error, sizeof(reply->error), "%s",
					 r == 0 ? "espgw closed the connection before replying" :
					 errno == ETIMEDOUT ? "no reply from espgw in time" : strerror(errno));
			/* a late reply must not be taken for the next request's */
			close_conn(this);
			st = ESPGW_REPLY_MALFORMED;
			goto out;
		}
		st = espgw_parse_reply(text, len, id, expect, reply);
		if (st != ESPGW_REPLY_OTHER_ID)
		{
			break;
		}
	}
	if (st == ESPGW_REPLY_MALFORMED)
	{	/* out of step with the daemon: start afresh */
		close_conn(this);
	}
out:
	this->conn_lock->unlock(this->conn_lock);
	espgw_line_free(line);
	return st;
}

static uint64_t next_id(private_kernel_espgw_ipsec_t *this)
{
	return __atomic_add_fetch(&this->next_id, 1, __ATOMIC_RELAXED);
}

/* -------------------------------------------------------------- helpers */

/** Dotted quad of an IPv4 host; FALSE for anything else. */
static bool host_text(host_t *host, char buf[INET_ADDRSTRLEN])
{
	chunk_t a;

	if (!host || host->get_family(host) != AF_INET)
	{
		return FALSE;
	}
	a = host->get_address(host);
	return a.len == 4 && inet_ntop(AF_INET, a.ptr, buf, INET_ADDRSTRLEN) != NULL;
}

/** "a.b.c.d/n" of a traffic selector that is exactly one IPv4 prefix, any protocol and port. */
static bool ts_prefix(traffic_selector_t *ts, char buf[24])
{
	char net_text[INET_ADDRSTRLEN];
	host_t *net = NULL;
	uint8_t mask;
	bool ok;

	if (ts->get_type(ts) != TS_IPV4_ADDR_RANGE || ts->get_protocol(ts) != 0 ||
		ts->get_from_port(ts) != 0 || ts->get_to_port(ts) != 65535)
	{
		return FALSE;
	}
	ok = ts->to_subnet(ts, &net, &mask) && host_text(net, net_text);
	DESTROY_IF(net);
	if (ok)
	{
		snprintf(buf, 24, "%s/%u", net_text, mask);
	}
	return ok;
}

/** Fills a list of prefixes from charon's selectors; FALSE (with why) if one does not fit. */
static bool ts_list(linked_list_t *list, char bufs[ESPGW_MAX_TS][24], const char **out,
					size_t *n, char *why, size_t why_len)
{
	enumerator_t *e;
	traffic_selector_t *ts;
	bool ok = TRUE;

	*n = 0;
	if (!list)
	{
		return TRUE;
	}
	e = list->create_enumerator(list);
	while (ok && e->enumerate(e, &ts))
	{
		if (*n == ESPGW_MAX_TS)
		{
			snprintf(why, why_len, "more than %d traffic selectors", ESPGW_MAX_TS);
			ok = FALSE;
		}
		else if (!ts_prefix(ts, bufs[*n]))
		{
			snprintf(why, why_len, "traffic selector %R is not one IPv4 prefix of all "
					 "protocols and ports", ts);
			ok = FALSE;
		}
		else
		{
			out[*n] = bufs[*n];
			(*n)++;
		}
	}
	e->destroy(e);
	return ok;
}

static void track_sa(private_kernel_espgw_ipsec_t *this, uint32_t spi, host_t *dst,
					 bool inbound, uint32_t reqid)
{
	sa_entry_t *sa;

	INIT(sa,
		.spi = spi,
		.dst = dst->clone(dst),
		.inbound = inbound,
		.reqid = reqid,
	);
	this->state_lock->lock(this->state_lock);
	this->sas->insert_last(this->sas, sa);
	this->state_lock->unlock(this->state_lock);
}

static void sa_entry_destroy(sa_entry_t *sa)
{
	sa->dst->destroy(sa->dst);
	free(sa);
}

static void untrack_sa(private_kernel_espgw_ipsec_t *this, uint32_t spi, host_t *dst,
					   bool inbound)
{
	enumerator_t *e;
	sa_entry_t *sa;

	this->state_lock->lock(this->state_lock);
	e = this->sas->create_enumerator(this->sas);
	while (e->enumerate(e, &sa))
	{
		if (sa->spi == spi && sa->inbound == inbound && sa->dst->ip_equals(sa->dst, dst))
		{
			this->sas->remove_at(this->sas, e);
			sa_entry_destroy(sa);
		}
	}
	e->destroy(e);
	this->state_lock->unlock(this->state_lock);
}

/** After update_sa: the tracked SA's new destination (NULL: unchanged) and
 * reqid (0: unchanged). */
static void retrack_sa(private_kernel_espgw_ipsec_t *this, uint32_t spi, host_t *dst,
					   bool inbound, host_t *new_dst, uint32_t new_reqid)
{
	enumerator_t *e;
	sa_entry_t *sa;

	this->state_lock->lock(this->state_lock);
	e = this->sas->create_enumerator(this->sas);
	while (e->enumerate(e, &sa))
	{
		if (sa->spi == spi && sa->inbound == inbound && sa->dst->ip_equals(sa->dst, dst))
		{
			if (new_dst)
			{
				sa->dst->destroy(sa->dst);
				sa->dst = new_dst->clone(new_dst);
			}
			if (new_reqid)
			{
				sa->reqid = new_reqid;
			}
		}
	}
	e->destroy(e);
	this->state_lock->unlock(this->state_lock);
}

/** Direction of an SA as charon names it: the destination is ours when inbound. */
static bool sa_inbound(host_t *dst)
{
	host_t *src = NULL;

	/* charon knows which of its addresses are local; kernel-net answers */
	if (charon->kernel->get_source_addr)
	{
		src = charon->kernel->get_source_addr(charon->kernel, dst, NULL);
	}
	if (src)
	{
		bool local = src->ip_equals(src, dst);
		src->destroy(src);
		return local;
	}
	return FALSE;
}

/* ---------------------------------------------------------- kernel_ipsec_t */

METHOD(kernel_ipsec_t, get_features, kernel_feature_t,
	private_kernel_espgw_ipsec_t *this)
{
	/* policies are records only: an SA update needs no policy reinstall */
	return KERNEL_NO_POLICY_UPDATES;
}

METHOD(kernel_ipsec_t, get_spi, status_t,
	private_kernel_espgw_ipsec_t *this, host_t *src, host_t *dst,
	uint8_t protocol, uint32_t *spi)
{
	char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN];
	espgw_line_t line;
	espgw_reply_t reply;
	uint64_t id = next_id(this);

	if (protocol != IPPROTO_ESP)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to allocate an SPI: protocol %u is not "
			 "supported (ESP only)", protocol);
		return NOT_SUPPORTED;
	}
	if (!host_text(dst, d) || !host_text(src, s))
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to allocate an SPI: IPv6 is not supported");
		return NOT_SUPPORTED;
	}
	if (espgw_req_alloc_spi(d, s, 0, id, &line) != 0)
	{
		return FAILED;
	}
	if (request(this, &line, id, ESPGW_EXPECT_SPI, &reply) != ESPGW_REPLY_OK)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to allocate an SPI for %s: %s", d, reply.error);
		return FAILED;
	}
	*spi = htonl(reply.spi);
	/* charon deletes the SPIs of negotiations that failed: del_sa then knows it is inbound */
	track_sa(this, reply.spi, dst, TRUE, 0);
	DBG2(DBG_KNL, "kernel-espgw: got SPI 0x%.8x for %s", reply.spi, d);
	return SUCCESS;
}

METHOD(kernel_ipsec_t, get_cpi, status_t,
	private_kernel_espgw_ipsec_t *this, host_t *src, host_t *dst,
	uint16_t *cpi)
{
	DBG1(DBG_KNL, "kernel-espgw: IPComp is not supported");
	return NOT_SUPPORTED;
}

/** Why charon's SA cannot be an espgw SA; NULL if it can. */
static const char *unsupported(kernel_ipsec_sa_id_t *id, kernel_ipsec_add_sa_t *data,
							   char *buf, size_t len)
{
	if (id->proto != IPPROTO_ESP)
	{
		return "protocol AH (ESP only)";
	}
	if (id->src->get_family(id->src) != AF_INET || id->dst->get_family(id->dst) != AF_INET)
	{
		return "IPv6 outer addresses";
	}
	if (data->mode != MODE_TUNNEL)
	{
		snprintf(buf, len, "mode %N (tunnel mode only)", ipsec_mode_names, data->mode);
		return buf;
	}
	if (data->enc_alg != ENCR_AES_GCM_ICV16)
	{
		snprintf(buf, len, "encryption %N (AES-GCM with a 16-byte ICV only)",
				 encryption_algorithm_names, data->enc_alg);
		return buf;
	}
	if (data->enc_key.len != 20 && data->enc_key.len != 36)
	{
		snprintf(buf, len, "an AES-GCM key of %zu bytes with salt (AES-128 or AES-256 only)",
				 data->enc_key.len);
		return buf;
	}
	if (data->int_alg != AUTH_UNDEFINED)
	{
		snprintf(buf, len, "integrity %N (AEAD only)", integrity_algorithm_names,
				 data->int_alg);
		return buf;
	}
	if (data->ipcomp != IPCOMP_NONE)
	{
		return "IPComp";
	}
	if (data->tfc)
	{
		return "TFC padding";
	}
	if (id->mark.value || id->mark.mask || data->mark.value || data->mark.mask)
	{
		return "marks";
	}
	if (id->if_id)
	{
		return "interface IDs (if_id)";
	}
	if (data->label)
	{
		return "security labels";
	}
	if (data->hw_offload == HW_OFFLOAD_YES)
	{
		return "hardware offload";
	}
	if (data->inbound && data->replay_window > 4096)
	{
		snprintf(buf, len, "a replay window of %u packets (at most 4096)", data->replay_window);
		return buf;
	}
	return NULL;
}

METHOD(kernel_ipsec_t, add_sa, status_t,
	private_kernel_espgw_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_add_sa_t *data)
{
	char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN], why[128], ts_why[96];
	char local[ESPGW_MAX_TS][24], remote[ESPGW_MAX_TS][24];
	espgw_add_sa_t req = {
		.op = "add-sa",
		.inbound = data->inbound,
		.spi = ntohl(id->spi),
		.esn = data->esn,
		.origin = "plugin",
	};
	espgw_line_t line;
	espgw_reply_t reply;
	const char *no;
	uint64_t rid = next_id(this);

	no = unsupported(id, data, why, sizeof(why));
	if (no)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to add SA 0x%.8x: %s is not supported",
			 ntohl(id->spi), no);
		return NOT_SUPPORTED;
	}
	host_text(id->src, s);
	host_text(id->dst, d);
	req.src = s;
	req.dst = d;
	req.key_bits = data->enc_key.len == 20 ? 128 : 256;
	req.key = data->enc_key.ptr;
	req.key_len = data->enc_key.len;
	if (data->inbound)
	{
		req.replay_window = data->replay_window == 0 ? 0 :
							data->replay_window < 32 ? 32 : data->replay_window;
	}
	if (data->encap)
	{	/* both directions: sport = the source's port, dport = the destination's */
		req.encap = TRUE;
		req.sport = id->src->get_port(id->src);
		req.dport = id->dst->get_port(id->dst);
	}
	if (data->lifetime)
	{
		req.soft = (espgw_limits_t){
			.bytes = data->lifetime->bytes.rekey,
			.packets = data->lifetime->packets.rekey,
			.seconds = data->lifetime->time.rekey,
		};
		req.hard = (espgw_limits_t){
			.bytes = data->lifetime->bytes.life,
			.packets = data->lifetime->packets.life,
			.seconds = data->lifetime->time.life,
		};
	}
	/* child_sa.c: inbound src_ts = the peer's, dst_ts = ours; outbound the reverse */
	if (!ts_list(data->inbound ? data->dst_ts : data->src_ts, local, req.ts_local,
				 &req.n_local, ts_why, sizeof(ts_why)) ||
		!ts_list(data->inbound ? data->src_ts : data->dst_ts, remote, req.ts_remote,
				 &req.n_remote, ts_why, sizeof(ts_why)))
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to add SA 0x%.8x: %s", ntohl(id->spi), ts_why);
		return NOT_SUPPORTED;
	}
	if (!req.n_local || !req.n_remote)
	{
		req.n_local = req.n_remote = 0;
	}
	if (espgw_req_add_sa(&req, rid, &line) != 0)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to add SA 0x%.8x: request not built",
			 ntohl(id->spi));
		return FAILED;
	}
	if (request(this, &line, rid, ESPGW_EXPECT_NOTHING, &reply) != ESPGW_REPLY_OK)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to add %s SA 0x%.8x (%s -> %s): %s",
			 data->inbound ? "inbound" : "outbound", ntohl(id->spi), s, d, reply.error);
		return FAILED;
	}
	if (data->inbound)
	{	/* the reservation get_spi recorded */
		untrack_sa(this, ntohl(id->spi), id->dst, TRUE);
	}
	track_sa(this, ntohl(id->spi), id->dst, data->inbound, data->reqid);
	DBG2(DBG_KNL, "kernel-espgw: added %s SA 0x%.8x (%s -> %s)",
		 data->inbound ? "inbound" : "outbound", ntohl(id->spi), s, d);
	return SUCCESS;
}

/** Whether the SA named by id is one we installed inbound (else outbound). */
static bool tracked_inbound(private_kernel_espgw_ipsec_t *this, uint32_t spi, host_t *dst,
							bool *inbound)
{
	enumerator_t *e;
	sa_entry_t *sa;
	bool found = FALSE;

	this->state_lock->lock(this->state_lock);
	e = this->sas->create_enumerator(this->sas);
	while (!found && e->enumerate(e, &sa))
	{
		if (sa->spi == spi && sa->dst->ip_equals(sa->dst, dst))
		{
			*inbound = sa->inbound;
			found = TRUE;
		}
	}
	e->destroy(e);
	this->state_lock->unlock(this->state_lock);
	return found;
}

/** Direction of the SA charon names by (spi, dst): ours if we installed it, else by address. */
static bool direction_of(private_kernel_espgw_ipsec_t *this, kernel_ipsec_sa_id_t *id)
{
	bool inbound;

	if (tracked_inbound(this, ntohl(id->spi), id->dst, &inbound))
	{
		return inbound;
	}
	return sa_inbound(id->dst);
}

METHOD(kernel_ipsec_t, update_sa, status_t,
	private_kernel_espgw_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_update_sa_t *data)
{
	char d[INET_ADDRSTRLEN], remote[INET_ADDRSTRLEN];
	espgw_update_sa_t req = { .spi = ntohl(id->spi) };
	espgw_line_t line;
	espgw_reply_t reply;
	host_t *ours_old, *ours_new, *peer_old, *peer_new;
	uint64_t rid;

	if (!host_text(id->dst, d) || id->src->get_family(id->src) != AF_INET ||
		data->new_src->get_family(data->new_src) != AF_INET ||
		data->new_dst->get_family(data->new_dst) != AF_INET)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to update SA 0x%.8x: IPv6 is not supported",
			 ntohl(id->spi));
		return NOT_SUPPORTED;
	}
	req.inbound = direction_of(this, id);
	req.dst = d;
	ours_old = req.inbound ? id->dst : id->src;
	ours_new = req.inbound ? data->new_dst : data->new_src;
	peer_old = req.inbound ? id->src : id->dst;
	peer_new = req.inbound ? data->new_src : data->new_dst;
	if (!ours_old->ip_equals(ours_old, ours_new))
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to update SA 0x%.8x: a change of our own "
			 "address (%H to %H) is not supported", ntohl(id->spi), ours_old, ours_new);
		return NOT_SUPPORTED;
	}
	if (!peer_old->ip_equals(peer_old, peer_new))
	{
		host_text(peer_new, remote);
		req.remote = remote;
	}
	if (data->encap != data->new_encap ||
		(data->new_encap && (id->src->get_port(id->src) != data->new_src->get_port(data->new_src) ||
							 id->dst->get_port(id->dst) != data->new_dst->get_port(data->new_dst))))
	{
		req.set_encap = TRUE;
		req.encap = data->new_encap;
		req.sport = data->new_src->get_port(data->new_src);
		req.dport = data->new_dst->get_port(data->new_dst);
	}
	if (req.remote || req.set_encap)
	{
		rid = next_id(this);
		if (espgw_req_update_sa(&req, rid, &line) != 0)
		{
			return FAILED;
		}
		if (request(this, &line, rid, ESPGW_EXPECT_NOTHING, &reply) != ESPGW_REPLY_OK)
		{
			DBG1(DBG_KNL, "kernel-espgw: unable to update %s SA 0x%.8x: %s",
				 req.inbound ? "inbound" : "outbound", req.spi, reply.error);
			return FAILED;
		}
	}
	/* only once espgw took it: a moved outbound SA is found by its new
	 * destination, and keeps its reqid (new_reqid 0: unchanged) for
	 * query_policy and expiry */
	retrack_sa(this, req.spi, id->dst, req.inbound, req.remote && !req.inbound ? data->new_dst : NULL,
			   data->new_reqid);
	DBG2(DBG_KNL, "kernel-espgw: updated SA 0x%.8x", req.spi);
	return SUCCESS;
}

/* query-sa (query) or delete-sa for id; NOT_FOUND where espgw has no such SA (e.g.
 * removed by a hard expiry that charon is about to handle) */
static status_t sa_request(private_kernel_espgw_ipsec_t *this, kernel_ipsec_sa_id_t *id,
						   bool query, bool *inbound, espgw_reply_t *reply)
{
	char d[INET_ADDRSTRLEN];
	espgw_line_t line;
	espgw_reply_status_t st;
	uint64_t rid = next_id(this);
	uint32_t spi = ntohl(id->spi);

	if (!host_text(id->dst, d))
	{
		return NOT_SUPPORTED;
	}
	*inbound = direction_of(this, id);
	if ((query ? espgw_req_query_sa : espgw_req_delete_sa)(*inbound, spi, d, rid, &line) != 0)
	{
		return FAILED;
	}
	st = request(this, &line, rid, query ? ESPGW_EXPECT_USAGE : ESPGW_EXPECT_NOTHING, reply);
	if (st == ESPGW_REPLY_REFUSED && streq(reply->code, "not-found"))
	{
		DBG2(DBG_KNL, "kernel-espgw: SA 0x%.8x %s gone: %s", spi, query ? "is" : "already",
			 reply->error);
		return NOT_FOUND;
	}
	if (st != ESPGW_REPLY_OK)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to %s SA 0x%.8x: %s",
			 query ? "query" : *inbound ? "delete inbound" : "delete outbound", spi, reply->error);
		return FAILED;
	}
	return SUCCESS;
}

METHOD(kernel_ipsec_t, query_sa, status_t,
	private_kernel_espgw_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_query_sa_t *data, uint64_t *bytes, uint64_t *packets,
	time_t *time)
{
	espgw_reply_t reply;
	bool inbound;
	status_t status = sa_request(this, id, TRUE, &inbound, &reply);

	if (status != SUCCESS)
	{
		return status;
	}
	if (bytes)
	{
		*bytes = reply.bytes;
	}
	if (packets)
	{
		*packets = reply.packets;
	}
	if (time)
	{
		*time = reply.idle_known ? time_monotonic(NULL) - (time_t)(reply.idle_ms / 1000) : 0;
	}
	return SUCCESS;
}

METHOD(kernel_ipsec_t, del_sa, status_t,
	private_kernel_espgw_ipsec_t *this, kernel_ipsec_sa_id_t *id,
	kernel_ipsec_del_sa_t *data)
{
	espgw_reply_t reply;
	bool inbound;
	status_t status = sa_request(this, id, FALSE, &inbound, &reply);

	if (status != SUCCESS && status != NOT_FOUND)
	{	/* one espgw no longer has is gone already: not an error */
		return status;
	}
	untrack_sa(this, ntohl(id->spi), id->dst, inbound);
	DBG2(DBG_KNL, "kernel-espgw: deleted %s SA 0x%.8x%s", inbound ? "inbound" : "outbound",
		 ntohl(id->spi), reply.larval ? " (a reserved SPI)" : "");
	return SUCCESS;
}

METHOD(kernel_ipsec_t, flush_sas, status_t,
	private_kernel_espgw_ipsec_t *this)
{
	espgw_line_t line;
	espgw_reply_t reply;
	uint64_t rid = next_id(this);

	if (espgw_req_flush_sas("plugin", rid, &line) != 0)
	{
		return FAILED;
	}
	if (request(this, &line, rid, ESPGW_EXPECT_NOTHING, &reply) != ESPGW_REPLY_OK)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to flush SAs: %s", reply.error);
		return FAILED;
	}
	this->state_lock->lock(this->state_lock);
	this->sas->destroy_function(this->sas, (void*)sa_entry_destroy);
	this->sas = linked_list_create();
	this->state_lock->unlock(this->state_lock);
	return SUCCESS;
}

static void policy_entry_destroy(policy_entry_t *p)
{
	p->src_ts->destroy(p->src_ts);
	p->dst_ts->destroy(p->dst_ts);
	free(p);
}

/** The recorded policy for id; call with state_lock held. */
static policy_entry_t *find_policy(private_kernel_espgw_ipsec_t *this,
								   kernel_ipsec_policy_id_t *id)
{
	enumerator_t *e;
	policy_entry_t *p, *found = NULL;

	e = this->policies->create_enumerator(this->policies);
	while (!found && e->enumerate(e, &p))
	{
		if (p->dir == id->dir && p->src_ts->equals(p->src_ts, id->src_ts) &&
			p->dst_ts->equals(p->dst_ts, id->dst_ts))
		{
			found = p;
		}
	}
	e->destroy(e);
	return found;
}

METHOD(kernel_ipsec_t, add_policy, status_t,
	private_kernel_espgw_ipsec_t *this, kernel_ipsec_policy_id_t *id,
	kernel_ipsec_manage_policy_t *data)
{
	policy_entry_t *p;

	if (data->type != POLICY_IPSEC || !data->sa)
	{	/* bypass/drop/pass: espgw's config and exception path decide */
		return SUCCESS;
	}
	this->state_lock->lock(this->state_lock);
	p = find_policy(this, id);
	if (p)
	{
		p->refs++;
		p->reqid = data->sa->reqid;
	}
	else
	{
		INIT(p,
			.dir = id->dir,
			.src_ts = id->src_ts->clone(id->src_ts),
			.dst_ts = id->dst_ts->clone(id->dst_ts),
			.reqid = data->sa->reqid,
			.refs = 1,
		);
		this->policies->insert_last(this->policies, p);
	}
	this->state_lock->unlock(this->state_lock);
	DBG2(DBG_KNL, "kernel-espgw: recorded policy %R === %R %N (reqid %u)", id->src_ts,
		 id->dst_ts, policy_dir_names, id->dir, data->sa->reqid);
	return SUCCESS;
}

METHOD(kernel_ipsec_t, query_policy, status_t,
	private_kernel_espgw_ipsec_t *this, kernel_ipsec_policy_id_t *id,
	kernel_ipsec_query_policy_t *data, time_t *use_time)
{
	typedef struct { uint32_t spi; host_t *dst; } sa_ref_t;
	sa_ref_t refs[16];
	policy_entry_t *p;
	enumerator_t *e;
	sa_entry_t *sa;
	bool inbound = id->dir != POLICY_OUT;
	int n = 0, i;
	time_t last = 0;

	this->state_lock->lock(this->state_lock);
	p = find_policy(this, id);
	if (!p)
	{
		this->state_lock->unlock(this->state_lock);
		return NOT_FOUND;
	}
	e = this->sas->create_enumerator(this->sas);
	while (n < (int)countof(refs) && e->enumerate(e, &sa))
	{
		if (sa->reqid == p->reqid && sa->inbound == inbound)
		{
			refs[n].spi = sa->spi;
			refs[n].dst = sa->dst->clone(sa->dst);
			n++;
		}
	}
	e->destroy(e);
	this->state_lock->unlock(this->state_lock);

	for (i = 0; i < n; i++)
	{
		char d[INET_ADDRSTRLEN];
		espgw_line_t line;
		espgw_reply_t reply;
		uint64_t rid = next_id(this);

		if (host_text(refs[i].dst, d) &&
			espgw_req_query_sa(inbound, refs[i].spi, d, rid, &line) == 0 &&
			request(this, &line, rid, ESPGW_EXPECT_USAGE, &reply) == ESPGW_REPLY_OK &&
			reply.idle_known)
		{
			last = max(last, time_monotonic(NULL) - (time_t)(reply.idle_ms / 1000));
		}
		refs[i].dst->destroy(refs[i].dst);
	}
	*use_time = last;
	return SUCCESS;
}

METHOD(kernel_ipsec_t, del_policy, status_t,
	private_kernel_espgw_ipsec_t *this, kernel_ipsec_policy_id_t *id,
	kernel_ipsec_manage_policy_t *data)
{
	policy_entry_t *p;

	if (data->type != POLICY_IPSEC)
	{
		return SUCCESS;
	}
	this->state_lock->lock(this->state_lock);
	p = find_policy(this, id);
	if (p && --p->refs == 0)
	{
		this->policies->remove(this->policies, p, NULL);
		policy_entry_destroy(p);
	}
	this->state_lock->unlock(this->state_lock);
	return p ? SUCCESS : NOT_FOUND;
}

METHOD(kernel_ipsec_t, flush_policies, status_t,
	private_kernel_espgw_ipsec_t *this)
{
	this->state_lock->lock(this->state_lock);
	this->policies->destroy_function(this->policies, (void*)policy_entry_destroy);
	this->policies = linked_list_create();
	this->state_lock->unlock(this->state_lock);
	return SUCCESS;
}

METHOD(kernel_ipsec_t, bypass_socket, bool,
	private_kernel_espgw_ipsec_t *this, int fd, int family)
{
	/* IKE never meets espgw's SAs: espgw hands IKE to the exception path itself */
	return TRUE;
}

METHOD(kernel_ipsec_t, enable_udp_decap, bool,
	private_kernel_espgw_ipsec_t *this, int fd, int family, uint16_t port)
{
	/* espgw takes ESP-in-UDP off the wire itself; IKE on 4500 reaches charon */
	return TRUE;
}

/* ---------------------------------------------------------------- events */

/** The destination of an SA we installed, by SPI and direction (NULL if not exactly one). */
static host_t *tracked_dst(private_kernel_espgw_ipsec_t *this, uint32_t spi, bool inbound)
{
	enumerator_t *e;
	sa_entry_t *sa;
	host_t *dst = NULL;
	int n = 0;

	this->state_lock->lock(this->state_lock);
	e = this->sas->create_enumerator(this->sas);
	while (e->enumerate(e, &sa))
	{
		if (sa->spi == spi && sa->inbound == inbound && sa->reqid && n++ == 0)
		{
			dst = sa->dst->clone(sa->dst);
		}
	}
	e->destroy(e);
	this->state_lock->unlock(this->state_lock);
	if (n > 1)
	{
		DESTROY_IF(dst);
		dst = NULL;
	}
	return dst;
}

static void handle_event(private_kernel_espgw_ipsec_t *this, const char *text, size_t len)
{
	espgw_event_t ev;
	host_t *dst;

	switch (espgw_parse_event(text, len, &ev))
	{
		case ESPGW_EVENT_EXPIRE:
			if (ev.origin[0] && !streq(ev.origin, "plugin"))
			{
				return; /* an SA charon did not install */
			}
			dst = ev.dst[0] ? host_create_from_string(ev.dst, 0)
							: tracked_dst(this, ev.spi, ev.inbound);
			if (!dst)
			{
				DBG2(DBG_KNL, "kernel-espgw: expiry of SA 0x%.8x that is not ours", ev.spi);
				return;
			}
			DBG1(DBG_KNL, "kernel-espgw: %s expiry of %s SA 0x%.8x (%s)",
				 ev.hard ? "hard" : "soft", ev.inbound ? "inbound" : "outbound", ev.spi,
				 ev.reason[0] ? ev.reason : "?");
			charon->kernel->expire(charon->kernel, IPPROTO_ESP, htonl(ev.spi), dst, ev.hard);
			dst->destroy(dst);
			break;
		case ESPGW_EVENT_DELETED:
			dst = ev.dst[0] ? host_create_from_string(ev.dst, 0)
							: tracked_dst(this, ev.spi, ev.inbound);
			if (dst)
			{
				untrack_sa(this, ev.spi, dst, ev.inbound);
				dst->destroy(dst);
			}
			break;
		case ESPGW_EVENT_MALFORMED:
			/* events carry no keys: show what it was */
			DBG1(DBG_KNL, "kernel-espgw: ignoring a malformed event from espgw: %.*s",
				 (int)min(len, 200), text);
			break;
		default:
			break;
	}
}

/** Sleeps ms in slices, FALSE if asked to stop meanwhile. */
static bool nap(private_kernel_espgw_ipsec_t *this, int ms)
{
	while (ms > 0 && !this->stop)
	{
		usleep(50 * 1000);
		ms -= 50;
	}
	return !this->stop;
}

static void *run_events(private_kernel_espgw_ipsec_t *this)
{
	int backoff = 100;
	bool reported = FALSE;

	while (!this->stop)
	{
		espgw_reader_t reader;
		espgw_line_t line;
		espgw_reply_t reply;
		const char *text;
		size_t len;
		int fd, r;
		uint64_t rid = next_id(this);

		fd = espgw_connect(this->socket_path);
		if (fd < 0)
		{
			if (!reported)
			{
				DBG1(DBG_KNL, "kernel-espgw: cannot subscribe to espgw's events at %s (%s), "
					 "retrying", this->socket_path, strerror(errno));
				reported = TRUE;
			}
			nap(this, backoff);
			backoff = min(backoff * 2, 5000);
			continue;
		}
		espgw_reader_init(&reader, fd);
		r = -1;
		if (espgw_req_simple("subscribe", rid, &line) == 0)
		{
			int64_t deadline = espgw_now_ms() + this->timeout_ms;
			if (espgw_send_all(fd, line.text, line.len, deadline) == 0)
			{
				while ((r = espgw_read_line(&reader, deadline, &text, &len)) > 0)
				{
					espgw_reply_status_t st = espgw_parse_reply(text, len, rid,
															ESPGW_EXPECT_NOTHING, &reply);
					if (st == ESPGW_REPLY_OTHER_ID)
					{
						continue;
					}
					r = st == ESPGW_REPLY_OK ? 1 : -1;
					break;
				}
			}
			espgw_line_free(&line);
		}
		if (r > 0)
		{
			DBG1(DBG_KNL, "kernel-espgw: subscribed to espgw's events at %s", this->socket_path);
			backoff = 100;
			reported = FALSE;
			while (!this->stop)
			{
				r = espgw_read_line(&reader, espgw_now_ms() + 200, &text, &len);
				if (r > 0)
				{
					handle_event(this, text, len);
				}
				else if (r == 0 || errno != ETIMEDOUT)
				{
					break;
				}
			}
			if (!this->stop)
			{
				DBG1(DBG_KNL, "kernel-espgw: lost espgw's events connection, reconnecting");
			}
		}
		espgw_reader_reset(&reader);
		close(fd);
		if (!this->stop)
		{
			nap(this, backoff);
			backoff = min(backoff * 2, 5000);
		}
	}
	return NULL;
}

METHOD(kernel_ipsec_t, destroy, void,
	private_kernel_espgw_ipsec_t *this)
{
	this->stop = TRUE;
	if (this->events)
	{
		this->events->join(this->events);
	}
	close_conn(this);
	this->conn_lock->destroy(this->conn_lock);
	this->state_lock->destroy(this->state_lock);
	this->sas->destroy_function(this->sas, (void*)sa_entry_destroy);
	this->policies->destroy_function(this->policies, (void*)policy_entry_destroy);
	free(this->socket_path);
	free(this);
}

kernel_espgw_ipsec_t *kernel_espgw_ipsec_create()
{
	private_kernel_espgw_ipsec_t *this;

	INIT(this,
		.public = {
			.interface = {
				.get_features = _get_features,
				.get_spi = _get_spi,
				.get_cpi = _get_cpi,
				.add_sa = _add_sa,
				.update_sa = _update_sa,
				.query_sa = _query_sa,
				.del_sa = _del_sa,
				.flush_sas = _flush_sas,
				.add_policy = _add_policy,
				.query_policy = _query_policy,
				.del_policy = _del_policy,
				.flush_policies = _flush_policies,
				.bypass_socket = _bypass_socket,
				.enable_udp_decap = _enable_udp_decap,
				.destroy = _destroy,
			},
		},
		.socket_path = strdup(lib->settings->get_str(lib->settings,
							"%s.plugins.kernel-espgw.socket", DEFAULT_SOCKET, lib->ns)),
		.timeout_ms = lib->settings->get_int(lib->settings,
							"%s.plugins.kernel-espgw.timeout", DEFAULT_TIMEOUT_MS, lib->ns),
		.fd = -1,
		.conn_lock = mutex_create(MUTEX_TYPE_DEFAULT),
		.state_lock = mutex_create(MUTEX_TYPE_DEFAULT),
		.sas = linked_list_create(),
		.policies = linked_list_create(),
	);
	if (this->timeout_ms <= 0)
	{
		this->timeout_ms = DEFAULT_TIMEOUT_MS;
	}
	espgw_reader_init(&this->reader, -1);
	this->events = thread_create((thread_main_t)run_events, this);
	if (!this->events)
	{
		DBG1(DBG_KNL, "kernel-espgw: unable to start the events thread");
		destroy(this);
		return NULL;
	}
	DBG1(DBG_KNL, "kernel-espgw: IPsec SAs go to espgw at %s (timeout %d ms)",
		 this->socket_path, this->timeout_ms);
	/* A charon that starts has no IKE_SA: every SA a previous charon installed
	 * (one that crashed or was killed leaves them behind) would keep its tunnel
	 * up, and its routes on it, with nobody to rekey or delete it. Remove them,
	 * as charon would have on a clean shutdown. One charon per espgw. */
	if (lib->settings->get_bool(lib->settings,
						"%s.plugins.kernel-espgw.flush_on_start", TRUE, lib->ns))
	{
		if (_flush_sas(this) == SUCCESS)
		{
			DBG1(DBG_KNL, "kernel-espgw: removed the SAs a previous charon left in espgw");
		}
		else
		{
			DBG1(DBG_KNL, "kernel-espgw: could not flush a previous charon's SAs (espgw not running yet?)");
		}
	}
	return &this->public;
}
