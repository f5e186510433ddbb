/*
 * espgw control-socket client for the kernel-espgw charon plugin: builds the
 * JSON-lines requests of docs/control-api.md (and the IKE additions of
 * issue 11) and parses the replies and events.
 *
 * Plain C on jansson and POSIX only, no strongSwan header, so it can be
 * unit-tested and fuzzed on its own. Numbers are host order here (the plugin
 * converts charon's network-order SPIs at its edge).
 *
 * Keys: a request with a key is built without it by jansson, then the key's
 * hex is spliced into a buffer this module owns and wipes
 * (espgw_line_free); jansson never holds key bytes or key text.
 */
#ifndef ESPGW_CLIENT_H_
#define ESPGW_CLIENT_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A request line ('\n'-terminated, NUL-terminated); len excludes the NUL. */
typedef struct {
	char *text;
	size_t len;
} espgw_line_t;

/* Wipes the line's bytes (it may hold key text) and frees it. */
void espgw_line_free(espgw_line_t *line);

typedef struct {
	uint64_t bytes, packets, seconds; /* 0 = no limit */
} espgw_limits_t;

#define ESPGW_MAX_TS 4

typedef struct {
	const char *op;            /* "add-sa" (default when NULL) or "replace-sa" */
	bool inbound;
	uint32_t spi;              /* host order, 256..2^32-1 */
	const char *src, *dst;     /* outer addresses, dotted quads (see protocol §1) */
	int key_bits;              /* 128 or 256: AES-GCM with a 16-byte ICV */
	const uint8_t *key;        /* key || 4-byte salt */
	size_t key_len;            /* 20 or 36 */
	bool esn;
	uint32_t replay_window;    /* inbound only: 0 (off) or 32..4096 */
	bool encap;                /* false: plain ESP, said explicitly */
	uint16_t sport, dport;     /* with encap */
	espgw_limits_t soft, hard;
	const char *ts_local[ESPGW_MAX_TS];  /* prefixes "a.b.c.d/n" */
	size_t n_local;
	const char *ts_remote[ESPGW_MAX_TS];
	size_t n_remote;
	const char *origin;        /* "plugin"; NULL = not sent */
} espgw_add_sa_t;

typedef struct {
	bool inbound;
	uint32_t spi;
	const char *dst;           /* the SA's current destination */
	const char *remote;        /* NULL: unchanged; else the peer's new address */
	bool set_encap;            /* send "encap" */
	bool encap;                /* with set_encap: false = plain ESP */
	uint16_t sport, dport;
} espgw_update_sa_t;

/* Request builders: 0 on success, -1 on bad input or allocation failure
 * (*out is then empty). `id` is echoed by espgw in the reply. */
int espgw_req_add_sa(const espgw_add_sa_t *req, uint64_t id, espgw_line_t *out);
int espgw_req_update_sa(const espgw_update_sa_t *req, uint64_t id, espgw_line_t *out);
int espgw_req_alloc_spi(const char *dst, const char *src, uint32_t timeout_s, uint64_t id,
						espgw_line_t *out);
int espgw_req_delete_sa(bool inbound, uint32_t spi, const char *dst, uint64_t id,
						espgw_line_t *out);
int espgw_req_query_sa(bool inbound, uint32_t spi, const char *dst, uint64_t id,
					   espgw_line_t *out);
int espgw_req_flush_sas(const char *origin, uint64_t id, espgw_line_t *out);
int espgw_req_simple(const char *op, uint64_t id, espgw_line_t *out); /* ping, subscribe */

typedef enum {
	ESPGW_REPLY_OK = 0,       /* "ok":true and the fields asked for are valid */
	ESPGW_REPLY_REFUSED,      /* "ok":false: error (and code) filled in */
	ESPGW_REPLY_OTHER_ID,     /* a well-formed reply to another request */
	ESPGW_REPLY_MALFORMED,    /* not JSON, not an object, ok missing, wrong types */
} espgw_reply_status_t;

#define ESPGW_ERROR_MAX 256

typedef struct {
	char error[ESPGW_ERROR_MAX]; /* espgw's reason (or ours, when malformed) */
	char code[32];               /* e.g. "not-found"; empty when absent */
	bool larval;                 /* delete-sa released a reservation */
	uint32_t spi;                /* alloc-spi */
	uint64_t packets, bytes;     /* query-sa */
	bool idle_known;             /* query-sa: idle_seconds was a number */
	uint64_t idle_ms;            /* query-sa: idle_seconds in milliseconds */
} espgw_reply_t;

/* What a reply must carry besides "ok". */
typedef enum {
	ESPGW_EXPECT_NOTHING = 0,
	ESPGW_EXPECT_SPI,            /* alloc-spi: "spi" */
	ESPGW_EXPECT_USAGE,          /* query-sa: "packets", "bytes", "idle_seconds" */
} espgw_expect_t;

/* Parses one reply line (without its newline) to the request numbered `id`. */
espgw_reply_status_t espgw_parse_reply(const char *line, size_t len, uint64_t id,
									   espgw_expect_t expect, espgw_reply_t *out);

typedef enum {
	ESPGW_EVENT_OTHER = 0,       /* an event we do not act on, or a reply */
	ESPGW_EVENT_EXPIRE,          /* sa-expire */
	ESPGW_EVENT_DELETED,         /* sa-deleted */
	ESPGW_EVENT_MALFORMED,
} espgw_event_kind_t;

typedef struct {
	espgw_event_kind_t kind;
	bool hard;                   /* sa-expire: kind "hard" */
	bool inbound;
	uint32_t spi;
	char src[16], dst[16];       /* dotted quads; empty when absent */
	char origin[16];             /* empty when absent */
	char reason[32];
} espgw_event_t;

/* Parses one event line; sa-expire/sa-deleted need direction and spi (dst
 * may be absent: dst is then empty). */
espgw_event_kind_t espgw_parse_event(const char *line, size_t len, espgw_event_t *out);

/* Parses espgw's SPI text: "0x" followed by 1..8 hex digits. */
bool espgw_parse_spi_text(const char *s, uint32_t *spi);

/* --- the connection (POSIX only) --- */

/* Connects to the Unix stream socket; returns the fd or -1 (errno set). */
int espgw_connect(const char *path);

/* A line reader over one socket. */
typedef struct {
	int fd;
	char *buf;
	size_t len, cap;
} espgw_reader_t;

void espgw_reader_init(espgw_reader_t *r, int fd);
/* Wipes and frees the buffer (replies never hold keys, but be tidy). */
void espgw_reader_reset(espgw_reader_t *r);

/* Writes all of the line; waits for the socket until deadline_ms
 * (CLOCK_MONOTONIC milliseconds). 0 or -1 (errno: ETIMEDOUT, EPIPE...). */
int espgw_send_all(int fd, const char *data, size_t len, int64_t deadline_ms);

/* Reads the next line (without '\n', NUL-terminated) into *line and *len, valid
 * until the next call. 1: a line; 0: the peer closed; -1: error or
 * ETIMEDOUT at deadline_ms (negative: wait forever). Lines over 1 MiB are an error. */
int espgw_read_line(espgw_reader_t *r, int64_t deadline_ms, const char **line, size_t *len);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t espgw_now_ms(void);

#ifdef __cplusplus
}
#endif

#endif /* ESPGW_CLIENT_H_ */
