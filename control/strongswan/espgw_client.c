/*
 * espgw control-socket client: request building, reply/event parsing and the
 * line transport. No strongSwan header here (see espgw_client.h).
 */
#define _GNU_SOURCE
#include "espgw_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

void espgw_line_free(espgw_line_t *line)
{
	if (line && line->text)
	{
		explicit_bzero(line->text, line->len);
		free(line->text);
	}
	if (line)
	{
		line->text = NULL;
		line->len = 0;
	}
}

static void spi_text(uint32_t spi, char buf[11])
{
	snprintf(buf, 11, "0x%08x", spi);
}

static bool valid_ipv4(const char *s)
{
	struct in_addr a;
	return s && strlen(s) < 16 && inet_pton(AF_INET, s, &a) == 1;
}

/* Dumps obj as one compact line; if key is given, splices
 * ,"key":"0x<hex>" before the closing brace directly into the line's own
 * buffer (wiped by espgw_line_free), so no other copy of the key text exists. */
static int finish(json_t *obj, const uint8_t *key, size_t key_len, espgw_line_t *out)
{
	static const char hex[] = "0123456789abcdef";
	static const char key_open[] = ",\"key\":\"0x";
	char *dumped;
	size_t n, total, pos = 0, i;
	json_malloc_t jmalloc;
	json_free_t jfree;

	out->text = NULL;
	out->len = 0;
	if (!obj)
	{
		return -1;
	}
	/* json_dumps' text is jansson's allocation: free it with jansson's free */
	json_get_alloc_funcs(&jmalloc, &jfree);
	/* No key member may come from jansson; ensure_ascii keeps the line ASCII. */
	dumped = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(obj);
	if (!dumped)
	{
		return -1;
	}
	n = strlen(dumped);
	if (n < 2 || dumped[n - 1] != '}')
	{
		jfree(dumped);
		return -1;
	}
	total = n + 1 /* '\n' */;
	if (key)
	{
		total += sizeof(key_open) - 1 + 2 * key_len + 1 /* '"' */;
	}
	out->text = malloc(total + 1);
	if (!out->text)
	{
		jfree(dumped);
		return -1;
	}
	memcpy(out->text, dumped, n - 1);
	pos = n - 1;
	jfree(dumped);
	if (key)
	{
		memcpy(out->text + pos, key_open, sizeof(key_open) - 1);
		pos += sizeof(key_open) - 1;
		for (i = 0; i < key_len; i++)
		{
			out->text[pos++] = hex[key[i] >> 4];
			out->text[pos++] = hex[key[i] & 0x0f];
		}
		out->text[pos++] = '"';
	}
	out->text[pos++] = '}';
	out->text[pos++] = '\n';
	out->text[pos] = '\0';
	out->len = pos;
	return 0;
}

static json_t *new_request(const char *op, uint64_t id)
{
	json_t *obj = json_object();
	if (!obj)
	{
		return NULL;
	}
	json_object_set_new(obj, "op", json_string(op));
	json_object_set_new(obj, "id", json_integer((json_int_t)(id & INT64_MAX)));
	return obj;
}

static void set_spi(json_t *obj, uint32_t spi)
{
	char buf[11];
	spi_text(spi, buf);
	json_object_set_new(obj, "spi", json_string(buf));
}

/* "encap": {"sport", "dport"} for UDP encapsulation, false without */
static void set_encap(json_t *obj, bool encap, uint16_t sport, uint16_t dport)
{
	json_t *e = encap ? json_object() : json_false();
	if (encap)
	{
		json_object_set_new(e, "sport", json_integer(sport));
		json_object_set_new(e, "dport", json_integer(dport));
	}
	json_object_set_new(obj, "encap", e);
}

static json_t *limits_json(const espgw_limits_t *l)
{
	json_t *o = json_object();
	if (!o)
	{
		return NULL;
	}
	json_object_set_new(o, "bytes", json_integer((json_int_t)(l->bytes & INT64_MAX)));
	json_object_set_new(o, "packets", json_integer((json_int_t)(l->packets & INT64_MAX)));
	json_object_set_new(o, "seconds", json_integer((json_int_t)(l->seconds & INT64_MAX)));
	return o;
}

static bool limits_set(const espgw_limits_t *l)
{
	return l->bytes || l->packets || l->seconds;
}

static json_t *prefix_array(const char *const *list, size_t n)
{
	json_t *a = json_array();
	size_t i;
	for (i = 0; a && i < n; i++)
	{
		json_array_append_new(a, json_string(list[i]));
	}
	return a;
}

int espgw_req_add_sa(const espgw_add_sa_t *req, uint64_t id, espgw_line_t *out)
{
	const char *op = req->op ? req->op : "add-sa";
	json_t *obj;

	out->text = NULL;
	out->len = 0;
	if ((strcmp(op, "add-sa") && strcmp(op, "replace-sa")) ||
		!valid_ipv4(req->src) || !valid_ipv4(req->dst) || req->spi < 256 ||
		!req->key || !((req->key_bits == 128 && req->key_len == 20) ||
					   (req->key_bits == 256 && req->key_len == 36)) ||
		req->n_local > ESPGW_MAX_TS || req->n_remote > ESPGW_MAX_TS ||
		(req->n_local == 0) != (req->n_remote == 0))
	{
		return -1;
	}
	obj = new_request(op, id);
	if (!obj)
	{
		return -1;
	}
	json_object_set_new(obj, "direction", json_string(req->inbound ? "in" : "out"));
	set_spi(obj, req->spi);
	json_object_set_new(obj, "src", json_string(req->src));
	json_object_set_new(obj, "dst", json_string(req->dst));
	json_object_set_new(obj, "algo", json_string(req->key_bits == 128 ? "aes128-gcm" : "aes256-gcm"));
	json_object_set_new(obj, "esn", json_boolean(req->esn));
	if (req->inbound)
	{
		json_object_set_new(obj, "replay_window", json_integer(req->replay_window));
	}
	set_encap(obj, req->encap, req->sport, req->dport);
	if (limits_set(&req->soft) || limits_set(&req->hard))
	{
		json_t *l = json_object();
		json_object_set_new(l, "soft", limits_json(&req->soft));
		json_object_set_new(l, "hard", limits_json(&req->hard));
		json_object_set_new(obj, "lifetime", l);
	}
	if (req->n_local)
	{
		json_t *ts = json_object();
		json_object_set_new(ts, "local", prefix_array(req->ts_local, req->n_local));
		json_object_set_new(ts, "remote", prefix_array(req->ts_remote, req->n_remote));
		json_object_set_new(obj, "traffic_selectors", ts);
	}
	if (req->origin)
	{
		json_object_set_new(obj, "origin", json_string(req->origin));
	}
	return finish(obj, req->key, req->key_len, out);
}

int espgw_req_update_sa(const espgw_update_sa_t *req, uint64_t id, espgw_line_t *out)
{
	json_t *obj;

	out->text = NULL;
	out->len = 0;
	if (!valid_ipv4(req->dst) || (req->remote && !valid_ipv4(req->remote)) ||
		(!req->remote && !req->set_encap))
	{
		return -1;
	}
	obj = new_request("update-sa", id);
	if (!obj)
	{
		return -1;
	}
	json_object_set_new(obj, "direction", json_string(req->inbound ? "in" : "out"));
	set_spi(obj, req->spi);
	json_object_set_new(obj, "dst", json_string(req->dst));
	if (req->remote)
	{
		json_object_set_new(obj, "remote", json_string(req->remote));
	}
	if (req->set_encap)
	{
		set_encap(obj, req->encap, req->sport, req->dport);
	}
	return finish(obj, NULL, 0, out);
}

int espgw_req_alloc_spi(const char *dst, const char *src, uint32_t timeout_s, uint64_t id,
						espgw_line_t *out)
{
	json_t *obj;

	out->text = NULL;
	out->len = 0;
	if (!valid_ipv4(dst) || (src && !valid_ipv4(src)) || timeout_s > 3600)
	{
		return -1;
	}
	obj = new_request("alloc-spi", id);
	if (!obj)
	{
		return -1;
	}
	json_object_set_new(obj, "dst", json_string(dst));
	if (src)
	{
		json_object_set_new(obj, "src", json_string(src));
	}
	if (timeout_s)
	{
		json_object_set_new(obj, "timeout_s", json_integer(timeout_s));
	}
	return finish(obj, NULL, 0, out);
}

static int sa_by_dst(const char *op, bool inbound, uint32_t spi, const char *dst, uint64_t id,
					 espgw_line_t *out)
{
	json_t *obj;

	out->text = NULL;
	out->len = 0;
	if (!valid_ipv4(dst))
	{
		return -1;
	}
	obj = new_request(op, id);
	if (!obj)
	{
		return -1;
	}
	json_object_set_new(obj, "direction", json_string(inbound ? "in" : "out"));
	set_spi(obj, spi);
	json_object_set_new(obj, "dst", json_string(dst));
	return finish(obj, NULL, 0, out);
}

int espgw_req_delete_sa(bool inbound, uint32_t spi, const char *dst, uint64_t id,
						espgw_line_t *out)
{
	return sa_by_dst("delete-sa", inbound, spi, dst, id, out);
}

int espgw_req_query_sa(bool inbound, uint32_t spi, const char *dst, uint64_t id,
					   espgw_line_t *out)
{
	return sa_by_dst("query-sa", inbound, spi, dst, id, out);
}

int espgw_req_flush_sas(const char *origin, uint64_t id, espgw_line_t *out)
{
	json_t *obj = new_request("flush-sas", id);

	if (obj && origin)
	{
		json_object_set_new(obj, "origin", json_string(origin));
	}
	return finish(obj, NULL, 0, out);
}

int espgw_req_simple(const char *op, uint64_t id, espgw_line_t *out)
{
	return finish(new_request(op, id), NULL, 0, out);
}

/* ---------------------------------------------------------------- parsing */

bool espgw_parse_spi_text(const char *s, uint32_t *spi)
{
	uint32_t v = 0;
	size_t i, n;

	if (!s || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
	{
		return false;
	}
	n = strlen(s + 2);
	if (n < 1 || n > 8)
	{
		return false;
	}
	for (i = 2; s[i]; i++)
	{
		char c = s[i];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return false;
		v = (v << 4) | (uint32_t)d;
	}
	*spi = v;
	return true;
}

/* An SPI member: "0x..." text (espgw's form) or a JSON integer 0..2^32-1. */
static bool json_spi(json_t *v, uint32_t *spi)
{
	if (json_is_string(v))
	{
		return espgw_parse_spi_text(json_string_value(v), spi);
	}
	if (json_is_integer(v))
	{
		json_int_t i = json_integer_value(v);
		if (i < 0 || i > (json_int_t)UINT32_MAX)
		{
			return false;
		}
		*spi = (uint32_t)i;
		return true;
	}
	return false;
}

static bool json_count(json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
	{
		return false;
	}
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static void set_error(espgw_reply_t *out, const char *fmt, const char *detail)
{
	snprintf(out->error, sizeof(out->error), fmt, detail ? detail : "");
}

espgw_reply_status_t espgw_parse_reply(const char *line, size_t len, uint64_t id,
									   espgw_expect_t expect, espgw_reply_t *out)
{
	json_error_t jerr;
	json_t *root, *v;
	espgw_reply_status_t st = ESPGW_REPLY_MALFORMED;

	memset(out, 0, sizeof(*out));
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
	{
		set_error(out, "malformed reply from espgw: %s", jerr.text);
		return ESPGW_REPLY_MALFORMED;
	}
	if (!json_is_object(root))
	{
		set_error(out, "malformed reply from espgw: not an object%s", NULL);
		goto done;
	}
	v = json_object_get(root, "ok");
	if (!v && json_object_get(root, "event"))
	{	/* an event on a connection that asked for none: not ours */
		st = ESPGW_REPLY_OTHER_ID;
		goto done;
	}
	/* the id first: a late reply to an abandoned request is skipped, whatever it holds */
	{
		json_t *idv = json_object_get(root, "id");
		if (!json_is_integer(idv))
		{
			set_error(out, "malformed reply from espgw: %s", idv ? "\"id\" is not an integer"
															 : "no \"id\"");
			goto done;
		}
		if ((uint64_t)json_integer_value(idv) != (id & INT64_MAX))
		{
			st = ESPGW_REPLY_OTHER_ID;
			goto done;
		}
	}
	if (!json_is_boolean(v))
	{
		set_error(out, "malformed reply from espgw: %s", v ? "\"ok\" is not a boolean"
														  : "no \"ok\"");
		goto done;
	}
	if (!json_is_true(v))
	{
		json_t *e = json_object_get(root, "error"), *c = json_object_get(root, "code");
		if (json_is_string(e))
		{
			snprintf(out->error, sizeof(out->error), "%s", json_string_value(e));
		}
		else
		{
			set_error(out, "espgw refused without a reason%s", NULL);
		}
		if (json_is_string(c))
		{
			snprintf(out->code, sizeof(out->code), "%s", json_string_value(c));
		}
		st = ESPGW_REPLY_REFUSED;
		goto done;
	}
	v = json_object_get(root, "larval");
	if (v && !json_is_boolean(v))
	{
		set_error(out, "malformed reply from espgw: %s", "\"larval\" is not a boolean");
		goto done;
	}
	out->larval = json_is_true(v);
	if (expect == ESPGW_EXPECT_SPI)
	{
		if (!json_spi(json_object_get(root, "spi"), &out->spi) || out->spi < 256)
		{
			set_error(out, "malformed reply from espgw: %s", "no valid \"spi\"");
			goto done;
		}
	}
	else if (expect == ESPGW_EXPECT_USAGE)
	{
		if (!json_count(json_object_get(root, "packets"), &out->packets) ||
			!json_count(json_object_get(root, "bytes"), &out->bytes))
		{
			set_error(out, "malformed reply from espgw: %s", "no valid \"packets\"/\"bytes\"");
			goto done;
		}
		v = json_object_get(root, "idle_seconds");
		if (json_is_null(v))
		{
			out->idle_known = false;
		}
		else if (json_is_number(v) && isfinite(json_number_value(v)) &&
				 json_number_value(v) >= 0 && json_number_value(v) <= 1e12)
		{
			out->idle_known = true;
			out->idle_ms = (uint64_t)llround(json_number_value(v) * 1000.0);
		}
		else
		{
			set_error(out, "malformed reply from espgw: %s", "no valid \"idle_seconds\"");
			goto done;
		}
	}
	st = ESPGW_REPLY_OK;
done:
	json_decref(root);
	return st;
}

static bool copy_str(json_t *v, char *dst, size_t cap)
{
	if (!json_is_string(v) || strlen(json_string_value(v)) >= cap)
	{
		return false;
	}
	strcpy(dst, json_string_value(v));
	return true;
}

espgw_event_kind_t espgw_parse_event(const char *line, size_t len, espgw_event_t *out)
{
	json_error_t jerr;
	json_t *root, *v;
	const char *name, *dir;
	espgw_event_kind_t kind = ESPGW_EVENT_MALFORMED;

	memset(out, 0, sizeof(*out));
	out->kind = ESPGW_EVENT_MALFORMED;
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
	{
		return ESPGW_EVENT_MALFORMED;
	}
	if (!json_is_object(root))
	{
		goto done;
	}
	v = json_object_get(root, "event");
	if (!v)
	{	/* a reply (to subscribe): not an event */
		kind = json_object_get(root, "ok") ? ESPGW_EVENT_OTHER : ESPGW_EVENT_MALFORMED;
		goto done;
	}
	if (!json_is_string(v))
	{
		goto done;
	}
	name = json_string_value(v);
	if (strcmp(name, "sa-expire") && strcmp(name, "sa-deleted"))
	{
		kind = ESPGW_EVENT_OTHER;
		goto done;
	}
	v = json_object_get(root, "protocol");
	if (v && !(json_is_string(v) && !strcmp(json_string_value(v), "esp")))
	{
		goto done;
	}
	v = json_object_get(root, "direction");
	dir = json_is_string(v) ? json_string_value(v) : "";
	if (!strcmp(dir, "in"))
	{
		out->inbound = true;
	}
	else if (strcmp(dir, "out"))
	{
		goto done;
	}
	if (!json_spi(json_object_get(root, "spi"), &out->spi))
	{
		goto done;
	}
	/* dst: absent from an espgw older than issue 11's events (the caller then
	 * finds it by SPI and direction); if given, a dotted quad */
	v = json_object_get(root, "dst");
	if (v && (!copy_str(v, out->dst, sizeof(out->dst)) || !valid_ipv4(out->dst)))
	{
		goto done;
	}
	v = json_object_get(root, "src");
	if (v && (!copy_str(v, out->src, sizeof(out->src)) || !valid_ipv4(out->src)))
	{
		goto done;
	}
	v = json_object_get(root, "origin");
	if (v && !copy_str(v, out->origin, sizeof(out->origin)))
	{
		goto done;
	}
	v = json_object_get(root, "reason");
	if (v && !copy_str(v, out->reason, sizeof(out->reason)))
	{
		goto done;
	}
	if (!strcmp(name, "sa-expire"))
	{
		v = json_object_get(root, "kind");
		if (!json_is_string(v))
		{
			goto done;
		}
		if (!strcmp(json_string_value(v), "hard"))
		{
			out->hard = true;
		}
		else if (strcmp(json_string_value(v), "soft"))
		{
			goto done;
		}
		kind = ESPGW_EVENT_EXPIRE;
	}
	else
	{
		kind = ESPGW_EVENT_DELETED;
	}
done:
	json_decref(root);
	out->kind = kind;
	return kind;
}

/* -------------------------------------------------------------- transport */

int64_t espgw_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int espgw_connect(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;

	if (!path || strlen(path) >= sizeof(addr.sun_path))
	{
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		return -1;
	}
	if (connect(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0)
	{
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int wait_fd(int fd, short events, int64_t deadline_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int64_t left;
	int r;

	for (;;)
	{
		left = deadline_ms < 0 ? -1 : deadline_ms - espgw_now_ms();
		if (deadline_ms >= 0 && left <= 0)
		{
			errno = ETIMEDOUT;
			return -1;
		}
		r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
		if (r > 0)
		{
			return 0;
		}
		if (r < 0 && errno != EINTR)
		{
			return -1;
		}
	}
}

int espgw_send_all(int fd, const char *data, size_t len, int64_t deadline_ms)
{
	size_t done = 0;
	while (done < len)
	{
		ssize_t n = send(fd, data + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
		{
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
		{
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		{
			if (wait_fd(fd, POLLOUT, deadline_ms) < 0)
			{
				return -1;
			}
			continue;
		}
		return -1;
	}
	return 0;
}

void espgw_reader_init(espgw_reader_t *r, int fd)
{
	r->fd = fd;
	r->buf = NULL;
	r->len = 0;
	r->cap = 0;
}

void espgw_reader_reset(espgw_reader_t *r)
{
	if (r->buf)
	{
		explicit_bzero(r->buf, r->cap);
		free(r->buf);
	}
	r->buf = NULL;
	r->len = r->cap = 0;
}

#define ESPGW_LINE_MAX (1u << 20)

int espgw_read_line(espgw_reader_t *r, int64_t deadline_ms, const char **line, size_t *len)
{
	/* Drop the line returned last time (it ends at the first NUL we wrote). */
	if (r->buf && r->len)
	{
		char *nul = memchr(r->buf, '\0', r->len);
		if (nul)
		{
			size_t used = (size_t)(nul - r->buf) + 1;
			memmove(r->buf, r->buf + used, r->len - used);
			r->len -= used;
		}
	}
	for (;;)
	{
		char *nl = r->buf ? memchr(r->buf, '\n', r->len) : NULL;
		ssize_t n;

		if (nl)
		{
			*nl = '\0';
			*line = r->buf;
			*len = (size_t)(nl - r->buf);
			return 1;
		}
		if (r->len >= ESPGW_LINE_MAX)
		{
			errno = EMSGSIZE;
			return -1;
		}
		if (r->cap - r->len < 4096)
		{
			size_t cap = r->cap ? r->cap * 2 : 8192;
			char *nb = malloc(cap);
			if (!nb)
			{
				return -1;
			}
			if (r->buf)
			{
				memcpy(nb, r->buf, r->len);
				explicit_bzero(r->buf, r->cap);
				free(r->buf);
			}
			r->buf = nb;
			r->cap = cap;
		}
		n = recv(r->fd, r->buf + r->len, r->cap - r->len, MSG_DONTWAIT);
		if (n > 0)
		{
			/* A NUL inside a line would end it early: espgw never sends one. */
			if (memchr(r->buf + r->len, '\0', (size_t)n))
			{
				errno = EBADMSG;
				return -1;
			}
			r->len += (size_t)n;
			continue;
		}
		if (n == 0)
		{
			return 0;
		}
		if (errno == EINTR)
		{
			continue;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK)
		{
			return -1;
		}
		if (wait_fd(r->fd, POLLIN, deadline_ms) < 0)
		{
			return -1;
		}
	}
}
