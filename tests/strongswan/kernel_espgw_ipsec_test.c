/*
 * kernel-espgw's kernel_ipsec_t against a scripted espgw (a Unix socket
 * served by a thread of this test): each charon call must become exactly the
 * request of issue 11's §8, with charon's conventions (SPIs in network order,
 * src_ts/dst_ts swapping with the direction, the hosts' NAT-T ports) turned
 * into espgw's (host-order SPI text, our side's selectors, sport/dport).
 * Expected values are written from charon's structures, not from our output.
 *
 * Runs libstrongswan and libcharon in-process (no plugins, no root).
 */
#include <library.h>
#include <daemon.h>
#include <collections/linked_list.h>
#include <selectors/traffic_selector.h>

#include "kernel_espgw_ipsec.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int failures;

#define CHECK(cond) do { if (!(cond)) { \
	fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

/* ------------------------------------------------------- scripted espgw */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static char *requests[64];          /* request lines received (not subscribe) */
static int n_requests;
static const char *next_reply;      /* members after "ok"/"id", e.g. "\"spi\":\"0x..\"" or NULL */
static bool next_refuse;            /* reply ok:false with next_reply's members */
static int events_fd = -1;
static int listen_fd;

static void reply(int fd, json_int_t id, bool ok, const char *members)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "{\"ok\":%s,\"id\":%lld%s%s}\n", ok ? "true" : "false",
					 (long long)id, members ? "," : "", members ? members : "");
	if (write(fd, buf, n) != n)
	{
		perror("write");
	}
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[65536];
	size_t len = 0;
	ssize_t n;

	while ((n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
	{
		char *nl;
		len += n;
		buf[len] = '\0';
		while ((nl = strchr(buf, '\n')))
		{
			json_t *j;
			*nl = '\0';
			j = json_loads(buf, 0, NULL);
			if (j)
			{
				json_int_t id = json_integer_value(json_object_get(j, "id"));
				const char *op = json_string_value(json_object_get(j, "op"));
				pthread_mutex_lock(&mu);
				if (op && !strcmp(op, "subscribe"))
				{
					events_fd = fd;
					reply(fd, id, true, "\"subscribed\":true");
				}
				else
				{
					if (n_requests < 64)
					{
						requests[n_requests++] = strdup(buf);
					}
					reply(fd, id, !next_refuse, next_reply);
					next_reply = NULL;
					next_refuse = FALSE;
				}
				pthread_cond_broadcast(&cv);
				pthread_mutex_unlock(&mu);
				json_decref(j);
			}
			memmove(buf, nl + 1, len - (nl + 1 - buf));
			len -= nl + 1 - buf;
		}
	}
	close(fd);
	return NULL;
}

static void *accept_loop(void *arg)
{
	for (;;)
	{
		pthread_t t;
		int fd = accept(listen_fd, NULL, NULL);
		if (fd < 0)
		{
			return NULL;
		}
		pthread_create(&t, NULL, serve, (void*)(intptr_t)fd);
		pthread_detach(t);
	}
}

/** The last request, parsed; NULL if none came. */
static json_t *last_request(int expect_count)
{
	json_t *j = NULL;
	pthread_mutex_lock(&mu);
	if (n_requests == expect_count && n_requests > 0)
	{
		j = json_loads(requests[n_requests - 1], JSON_REJECT_DUPLICATES, NULL);
	}
	pthread_mutex_unlock(&mu);
	return j;
}

static int count(void)
{
	int n;
	pthread_mutex_lock(&mu);
	n = n_requests;
	pthread_mutex_unlock(&mu);
	return n;
}

static void script(bool refuse, const char *members)
{
	pthread_mutex_lock(&mu);
	next_refuse = refuse;
	next_reply = members;
	pthread_mutex_unlock(&mu);
}

/* A member equals a JSON text (compared structurally by jansson's json_equal). */
static bool member_is(json_t *req, const char *key, const char *json_text)
{
	json_t *want = json_loads(json_text, JSON_DECODE_ANY, NULL);
	bool eq = want && json_equal(json_object_get(req, key), want);
	if (!eq)
	{
		char *got = json_dumps(json_object_get(req, key), JSON_ENCODE_ANY | JSON_COMPACT);
		fprintf(stderr, "  %s: got %s, want %s\n", key, got ? got : "(absent)", json_text);
		free(got);
	}
	json_decref(want);
	return eq;
}

/* ----------------------------------------------------- charon's listener */

static uint32_t expired_spi;
static bool expired_hard;
static char expired_dst[64];

static bool on_expire(kernel_listener_t *l, uint8_t protocol, uint32_t spi, host_t *dst, bool hard)
{
	pthread_mutex_lock(&mu);
	if (protocol == IPPROTO_ESP)
	{
		expired_spi = spi;
		expired_hard = hard;
		snprintf(expired_dst, sizeof(expired_dst), "%H", dst);
	}
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	return TRUE;
}

/* ------------------------------------------------------------------ tests */

static linked_list_t *ts_list(const char *cidr)
{
	return linked_list_create_with_items(traffic_selector_create_from_cidr((char*)cidr, 0, 0, 65535),
										 NULL);
}

int main(void)
{
	char dir[] = "/tmp/kernel-espgw-test-XXXXXX", sock[128], conf[128];
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	kernel_listener_t listener = { .expire = on_expire };
	kernel_ipsec_t *ipsec;
	pthread_t acceptor;
	FILE *f;
	json_t *req;
	uint32_t spi = 0;
	int n;

	if (!mkdtemp(dir))
	{
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock, sizeof(sock), "%s/espgw.sock", dir);
	snprintf(conf, sizeof(conf), "%s/strongswan.conf", dir);
	f = fopen(conf, "w");
	fprintf(f, "charon {\n plugins {\n  kernel-espgw {\n   socket = %s\n   timeout = 2000\n"
			"   flush_on_start = no\n  }\n }\n}\n", sock);
	fclose(f);

	listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(addr.sun_path, sock);
	if (bind(listen_fd, (struct sockaddr*)&addr, sizeof(addr)) || listen(listen_fd, 8))
	{
		perror("bind");
		return 1;
	}
	pthread_create(&acceptor, NULL, accept_loop, NULL);

	if (!library_init(conf, "charon") || !libcharon_init())
	{
		fprintf(stderr, "strongSwan libraries did not initialise\n");
		return 1;
	}
	charon->kernel->add_listener(charon->kernel, &listener);
	ipsec = &kernel_espgw_ipsec_create()->interface;

	host_t *ours = host_create_from_string("198.51.100.10", 4500);
	host_t *peer = host_create_from_string("203.0.113.1", 4501);   /* behind a NAT */

	/* get_spi: espgw's SPI comes back in network order */
	script(FALSE, "\"spi\":\"0xc3a1f00d\",\"expires_in_s\":180");
	CHECK(ipsec->get_spi(ipsec, peer, ours, IPPROTO_ESP, &spi) == SUCCESS);
	CHECK(spi == htonl(0xc3a1f00d));
	req = last_request(1);
	CHECK(req && member_is(req, "op", "\"alloc-spi\"") && member_is(req, "dst", "\"198.51.100.10\"") &&
		  member_is(req, "src", "\"203.0.113.1\""));
	json_decref(req);
	CHECK(ipsec->get_spi(ipsec, peer, ours, IPPROTO_AH, &spi) == NOT_SUPPORTED);
	CHECK(count() == 1);

	/* add_sa inbound: charon's src_ts is the peer's, dst_ts ours */
	uint8_t key[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0xa, 0xb, 0xc, 0xd};
	lifetime_cfg_t life = {
		.time = { .life = 3600, .rekey = 2700, .jitter = 0 },
		.bytes = { .life = 2000000, .rekey = 1000000 },
		.packets = { .life = 0, .rekey = 0 },
	};
	linked_list_t *peer_ts = ts_list("172.31.0.0/16"), *our_ts = ts_list("10.240.128.0/24");
	kernel_ipsec_sa_id_t in_id = {
		.src = peer, .dst = ours, .spi = htonl(0xc3a1f00d), .proto = IPPROTO_ESP,
	};
	kernel_ipsec_add_sa_t in_sa = {
		.reqid = 7, .mode = MODE_TUNNEL, .src_ts = peer_ts, .dst_ts = our_ts, .lifetime = &life,
		.enc_alg = ENCR_AES_GCM_ICV16, .enc_key = chunk_create(key, sizeof(key)),
		.int_alg = AUTH_UNDEFINED, .replay_window = 16, .encap = TRUE, .esn = TRUE,
		.inbound = TRUE, .update = TRUE,
	};
	CHECK(ipsec->add_sa(ipsec, &in_id, &in_sa) == SUCCESS);
	req = last_request(2);
	CHECK(req != NULL);
	if (req)
	{
		CHECK(member_is(req, "op", "\"add-sa\""));
		CHECK(member_is(req, "direction", "\"in\""));
		CHECK(member_is(req, "spi", "\"0xc3a1f00d\""));
		CHECK(member_is(req, "src", "\"203.0.113.1\""));
		CHECK(member_is(req, "dst", "\"198.51.100.10\""));
		CHECK(member_is(req, "algo", "\"aes128-gcm\""));
		CHECK(member_is(req, "key", "\"0x0102030405060708090a0b0c0d0e0f100a0b0c0d\""));
		CHECK(member_is(req, "esn", "true"));
		CHECK(member_is(req, "replay_window", "32"));
		CHECK(member_is(req, "encap", "{\"sport\":4501,\"dport\":4500}"));
		CHECK(member_is(req, "lifetime", "{\"soft\":{\"bytes\":1000000,\"packets\":0,\"seconds\":2700},"
										 "\"hard\":{\"bytes\":2000000,\"packets\":0,\"seconds\":3600}}"));
		CHECK(member_is(req, "traffic_selectors",
						"{\"local\":[\"10.240.128.0/24\"],\"remote\":[\"172.31.0.0/16\"]}"));
		CHECK(member_is(req, "origin", "\"plugin\""));
		CHECK(json_object_size(req) == 14); /* those 13 and the id */
	}
	json_decref(req);

	/* add_sa outbound: src_ts ours, dst_ts the peer's; no replay window */
	kernel_ipsec_sa_id_t out_id = {
		.src = ours, .dst = peer, .spi = htonl(0x00004001), .proto = IPPROTO_ESP,
	};
	kernel_ipsec_add_sa_t out_sa = in_sa;
	out_sa.src_ts = our_ts;
	out_sa.dst_ts = peer_ts;
	out_sa.inbound = FALSE;
	out_sa.update = FALSE;
	out_sa.esn = FALSE;
	out_sa.encap = FALSE;
	key[0] = 0x99;
	CHECK(ipsec->add_sa(ipsec, &out_id, &out_sa) == SUCCESS);
	req = last_request(3);
	CHECK(req && member_is(req, "direction", "\"out\"") && member_is(req, "spi", "\"0x00004001\"") &&
		  member_is(req, "src", "\"198.51.100.10\"") && member_is(req, "dst", "\"203.0.113.1\"") &&
		  member_is(req, "encap", "false") && member_is(req, "esn", "false") &&
		  !json_object_get(req, "replay_window") &&
		  member_is(req, "traffic_selectors",
					"{\"local\":[\"10.240.128.0/24\"],\"remote\":[\"172.31.0.0/16\"]}"));
	json_decref(req);

	/* what espgw cannot do is refused before anything is sent */
	kernel_ipsec_add_sa_t bad = out_sa;
	bad.enc_alg = ENCR_AES_CBC;
	CHECK(ipsec->add_sa(ipsec, &out_id, &bad) == NOT_SUPPORTED);
	bad = out_sa;
	bad.mode = MODE_TRANSPORT;
	CHECK(ipsec->add_sa(ipsec, &out_id, &bad) == NOT_SUPPORTED);
	bad = out_sa;
	bad.int_alg = AUTH_HMAC_SHA2_256_128;
	CHECK(ipsec->add_sa(ipsec, &out_id, &bad) == NOT_SUPPORTED);
	bad = out_sa;
	bad.ipcomp = IPCOMP_DEFLATE;
	CHECK(ipsec->add_sa(ipsec, &out_id, &bad) == NOT_SUPPORTED);
	bad = in_sa;
	bad.replay_window = 4097;
	CHECK(ipsec->add_sa(ipsec, &in_id, &bad) == NOT_SUPPORTED);
	bad = out_sa;
	linked_list_t *ported = linked_list_create_with_items(
		traffic_selector_create_from_cidr("10.240.128.0/24", IPPROTO_TCP, 0, 65535), NULL);
	bad.src_ts = ported;
	CHECK(ipsec->add_sa(ipsec, &out_id, &bad) == NOT_SUPPORTED);
	ported->destroy_offset(ported, offsetof(traffic_selector_t, destroy));
	CHECK(count() == 3);

	/* espgw's refusal is a failure */
	script(TRUE, "\"error\":\"no tunnel from 198.51.100.10 to 203.0.113.1\"");
	CHECK(ipsec->add_sa(ipsec, &out_id, &out_sa) == FAILED);
	CHECK(count() == 4);

	/* update_sa: the peer's NAT moved it to port 62001 (outbound SA) */
	host_t *peer_new = host_create_from_string("203.0.113.1", 62001);
	kernel_ipsec_update_sa_t upd = {
		.new_src = ours, .new_dst = peer_new, .encap = TRUE, .new_encap = TRUE,
	};
	kernel_ipsec_sa_id_t out_id_encap = out_id;
	CHECK(ipsec->update_sa(ipsec, &out_id_encap, &upd) == SUCCESS);
	req = last_request(5);
	CHECK(req && member_is(req, "op", "\"update-sa\"") && member_is(req, "direction", "\"out\"") &&
		  member_is(req, "spi", "\"0x00004001\"") && member_is(req, "dst", "\"203.0.113.1\"") &&
		  member_is(req, "encap", "{\"sport\":4500,\"dport\":62001}") && !json_object_get(req, "remote"));
	json_decref(req);
	/* ... and the inbound SA (src = the peer) */
	kernel_ipsec_update_sa_t upd_in = {
		.new_src = peer_new, .new_dst = ours, .encap = TRUE, .new_encap = TRUE,
	};
	CHECK(ipsec->update_sa(ipsec, &in_id, &upd_in) == SUCCESS);
	req = last_request(6);
	CHECK(req && member_is(req, "direction", "\"in\"") && member_is(req, "dst", "\"198.51.100.10\"") &&
		  member_is(req, "encap", "{\"sport\":62001,\"dport\":4500}"));
	json_decref(req);
	/* MOBIKE: the peer's address changed */
	host_t *peer_moved = host_create_from_string("192.0.2.77", 4501);
	kernel_ipsec_update_sa_t mob = {
		.new_src = ours, .new_dst = peer_moved, .encap = TRUE, .new_encap = TRUE,
	};
	CHECK(ipsec->update_sa(ipsec, &out_id, &mob) == SUCCESS);
	req = last_request(7);
	CHECK(req && member_is(req, "remote", "\"192.0.2.77\"") && !json_object_get(req, "encap"));
	json_decref(req);
	/* our own address changing is refused, nothing sent */
	host_t *ours_moved = host_create_from_string("198.51.100.99", 4500);
	kernel_ipsec_update_sa_t self = {
		.new_src = ours_moved, .new_dst = peer, .encap = TRUE, .new_encap = TRUE,
	};
	kernel_ipsec_sa_id_t out_id_moved = { .src = ours, .dst = peer_moved, .spi = htonl(0x4001),
										  .proto = IPPROTO_ESP };
	CHECK(ipsec->update_sa(ipsec, &out_id_moved, &self) == NOT_SUPPORTED);
	CHECK(count() == 7);

	/* query_sa: counters and the last use as monotonic time */
	uint64_t bytes = 0, packets = 0;
	time_t used = 0, now = time_monotonic(NULL);
	script(FALSE, "\"packets\":12,\"bytes\":1200,\"idle_seconds\":5.5");
	CHECK(ipsec->query_sa(ipsec, &in_id, &(kernel_ipsec_query_sa_t){}, &bytes, &packets, &used) == SUCCESS);
	CHECK(bytes == 1200 && packets == 12);
	CHECK(used >= now - 6 && used <= time_monotonic(NULL) - 5);
	req = last_request(8);
	CHECK(req && member_is(req, "op", "\"query-sa\"") && member_is(req, "direction", "\"in\"") &&
		  member_is(req, "spi", "\"0xc3a1f00d\"") && member_is(req, "dst", "\"198.51.100.10\""));
	json_decref(req);
	script(FALSE, "\"packets\":0,\"bytes\":0,\"idle_seconds\":null");
	CHECK(ipsec->query_sa(ipsec, &in_id, &(kernel_ipsec_query_sa_t){}, &bytes, &packets, &used) == SUCCESS);
	CHECK(used == 0);
	script(TRUE, "\"error\":\"no in SA with SPI 0xc3a1f00d\",\"code\":\"not-found\"");
	CHECK(ipsec->query_sa(ipsec, &in_id, &(kernel_ipsec_query_sa_t){}, &bytes, &packets, &used) == NOT_FOUND);
	script(TRUE, "\"error\":\"boom\"");
	CHECK(ipsec->query_sa(ipsec, &in_id, &(kernel_ipsec_query_sa_t){}, &bytes, &packets, &used) == FAILED);

	/* query_policy: the last use among the policy's (reqid 7) inbound SAs */
	traffic_selector_t *pts = traffic_selector_create_from_cidr("172.31.0.0/16", 0, 0, 65535);
	traffic_selector_t *ots = traffic_selector_create_from_cidr("10.240.128.0/24", 0, 0, 65535);
	ipsec_sa_cfg_t sa_cfg = { .mode = MODE_TUNNEL, .reqid = 7, .esp = { .use = TRUE, .spi = htonl(0xc3a1f00d) } };
	/* the outbound policy's SA is the one MOBIKE moved above: it keeps its
	 * reqid (update_sa's new_reqid 0 means unchanged) and is queried at its
	 * new address */
	kernel_ipsec_policy_id_t pol_out = { .dir = POLICY_OUT, .src_ts = ots, .dst_ts = pts };
	kernel_ipsec_manage_policy_t mp_out = { .type = POLICY_IPSEC, .src = ours, .dst = peer_moved, .sa = &sa_cfg };
	CHECK(ipsec->add_policy(ipsec, &pol_out, &mp_out) == SUCCESS);
	n = count();
	script(FALSE, "\"packets\":3,\"bytes\":300,\"idle_seconds\":1");
	CHECK(ipsec->query_policy(ipsec, &pol_out, &(kernel_ipsec_query_policy_t){}, &used) == SUCCESS);
	CHECK(count() == n + 1);
	req = last_request(n + 1);
	CHECK(req && member_is(req, "op", "\"query-sa\"") && member_is(req, "direction", "\"out\"") &&
		  member_is(req, "spi", "\"0x00004001\"") && member_is(req, "dst", "\"192.0.2.77\""));
	json_decref(req);
	CHECK(used >= time_monotonic(NULL) - 2);
	CHECK(ipsec->del_policy(ipsec, &pol_out, &mp_out) == SUCCESS);
	kernel_ipsec_policy_id_t pol = { .dir = POLICY_IN, .src_ts = pts, .dst_ts = ots };
	kernel_ipsec_manage_policy_t mp = { .type = POLICY_IPSEC, .src = peer, .dst = ours, .sa = &sa_cfg };
	CHECK(ipsec->add_policy(ipsec, &pol, &mp) == SUCCESS);
	n = count();
	script(FALSE, "\"packets\":3,\"bytes\":300,\"idle_seconds\":2");
	CHECK(ipsec->query_policy(ipsec, &pol, &(kernel_ipsec_query_policy_t){}, &used) == SUCCESS);
	CHECK(count() == n + 1);
	CHECK(used >= time_monotonic(NULL) - 3 && used <= time_monotonic(NULL) - 2);
	CHECK(ipsec->del_policy(ipsec, &pol, &mp) == SUCCESS);
	CHECK(ipsec->query_policy(ipsec, &pol, &(kernel_ipsec_query_policy_t){}, &used) == NOT_FOUND);
	CHECK(count() == n + 1); /* policies never reach espgw */

	/* del_sa: gone already (hard expiry) is success */
	script(TRUE, "\"error\":\"no such SA\",\"code\":\"not-found\"");
	CHECK(ipsec->del_sa(ipsec, &in_id, &(kernel_ipsec_del_sa_t){}) == SUCCESS);
	req = last_request(n + 2);
	CHECK(req && member_is(req, "op", "\"delete-sa\"") && member_is(req, "direction", "\"in\"") &&
		  member_is(req, "dst", "\"198.51.100.10\""));
	json_decref(req);
	script(TRUE, "\"error\":\"boom\"");
	CHECK(ipsec->del_sa(ipsec, &out_id, &(kernel_ipsec_del_sa_t){}) == FAILED);

	/* flush_sas: the plugin's SAs only */
	CHECK(ipsec->flush_sas(ipsec) == SUCCESS);
	req = last_request(n + 4);
	CHECK(req && member_is(req, "op", "\"flush-sas\"") && member_is(req, "origin", "\"plugin\""));
	json_decref(req);
	CHECK(ipsec->get_cpi(ipsec, peer, ours, &(uint16_t){0}) == NOT_SUPPORTED);
	CHECK(ipsec->bypass_socket(ipsec, 3, AF_INET) && ipsec->enable_udp_decap(ipsec, 3, AF_INET, 4500));

	/* expiry: espgw's event reaches charon with the SPI in network order */
	pthread_mutex_lock(&mu);
	for (int i = 0; i < 50 && events_fd < 0; i++)
	{
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000;
		if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
		pthread_cond_timedwait(&cv, &mu, &ts);
	}
	CHECK(events_fd >= 0);
	if (events_fd >= 0)
	{
		const char ev[] = "{\"event\":\"sa-expire\",\"kind\":\"hard\",\"reason\":\"bytes\",\"direction\":\"out\","
						  "\"spi\":\"0x00004001\",\"tunnel\":\"t\",\"src\":\"198.51.100.10\","
						  "\"dst\":\"203.0.113.1\",\"protocol\":\"esp\",\"origin\":\"plugin\"}\n";
		CHECK(write(events_fd, ev, sizeof(ev) - 1) == (ssize_t)sizeof(ev) - 1);
		for (int i = 0; i < 50 && !expired_spi; i++)
		{
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 100 * 1000000;
			if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
			pthread_cond_timedwait(&cv, &mu, &ts);
		}
		CHECK(expired_spi == htonl(0x4001));
		CHECK(expired_hard);
		CHECK(!strcmp(expired_dst, "203.0.113.1"));
	}
	pthread_mutex_unlock(&mu);

	ipsec->destroy(ipsec);

	/* By default a starting plugin removes what a previous charon left: one
	 * flush-sas of the plugin's origin, before anything else. */
	n = count();
	lib->settings->set_bool(lib->settings, "charon.plugins.kernel-espgw.flush_on_start", TRUE);
	script(FALSE, "\"deleted\":2,\"larval\":0");
	ipsec = &kernel_espgw_ipsec_create()->interface;
	req = last_request(n + 1);
	CHECK(req && member_is(req, "op", "\"flush-sas\"") && member_is(req, "origin", "\"plugin\""));
	json_decref(req);
	ipsec->destroy(ipsec);

	charon->kernel->remove_listener(charon->kernel, &listener);
	ours->destroy(ours);
	peer->destroy(peer);
	peer_new->destroy(peer_new);
	peer_moved->destroy(peer_moved);
	ours_moved->destroy(ours_moved);
	pts->destroy(pts);
	ots->destroy(ots);
	peer_ts->destroy_offset(peer_ts, offsetof(traffic_selector_t, destroy));
	our_ts->destroy_offset(our_ts, offsetof(traffic_selector_t, destroy));
	libcharon_deinit();
	library_deinit();
	unlink(sock);
	unlink(conf);
	rmdir(dir);
	if (failures)
	{
		fprintf(stderr, "%d checks failed\n", failures);
		return 1;
	}
	printf("all checks passed\n");
	return 0;
}
