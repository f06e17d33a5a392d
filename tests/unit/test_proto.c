/*
 * Unit tests of the agent wire protocol (src/agent/proto.c): frame round trips over a socketpair
 * and a plain file, rejection of oversized, unknown-type and truncated frames by both decoders,
 * and strict validation of every control message.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "util.h"

static void pair(int sv[2])
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static void raw_header(uint8_t hdr[5], uint32_t len, uint8_t type)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
	hdr[4] = type;
}

Test(frames, round_trip_each_type)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	cr_assert_eq(agent_send_frame(sv[0], AGENT_FRAME_STDOUT, "hello", 5, &err), 0, "%s", err.msg);
	cr_assert_eq(agent_send_frame(sv[0], AGENT_FRAME_STDERR, "e", 1, &err), 0);
	cr_assert_eq(agent_send_frame(sv[0], AGENT_FRAME_STDIN, NULL, 0, &err), 0);
	cr_assert_eq(agent_send_frame(sv[0], AGENT_FRAME_CONTROL, "{}", 2, &err), 0);
	close(sv[0]);

	struct agent_frame f;
	cr_assert_eq(agent_recv_frame(sv[1], &f, &err), 1, "%s", err.msg);
	cr_assert_eq(f.type, AGENT_FRAME_STDOUT);
	cr_assert_eq(f.len, 5);
	cr_assert_str_eq((char *)f.data, "hello");
	agent_frame_free(&f);
	cr_assert_eq(agent_recv_frame(sv[1], &f, &err), 1);
	cr_assert_eq(f.type, AGENT_FRAME_STDERR);
	agent_frame_free(&f);
	cr_assert_eq(agent_recv_frame(sv[1], &f, &err), 1);
	cr_assert_eq(f.type, AGENT_FRAME_STDIN);
	cr_assert_eq(f.len, 0, "a zero-length STDIN frame is the EOF marker");
	cr_assert_null(f.data);
	cr_assert_eq(agent_recv_frame(sv[1], &f, &err), 1);
	cr_assert_eq(f.type, AGENT_FRAME_CONTROL);
	agent_frame_free(&f);
	cr_assert_eq(agent_recv_frame(sv[1], &f, &err), 0, "clean end of stream");
	close(sv[1]);
}

Test(frames, max_payload_round_trip)
{
	/* Larger than a socket buffer, so the sender runs in a child. */
	int sv[2];
	pair(sv);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sv[1]);
		uint8_t *big = malloc(AGENT_MAX_PAYLOAD);
		for (size_t i = 0; i < AGENT_MAX_PAYLOAD; i++)
			big[i] = (uint8_t)(i * 7);
		struct cv_error err;
		_exit(agent_send_frame(sv[0], AGENT_FRAME_STDOUT, big, AGENT_MAX_PAYLOAD, &err) ? 1 : 0);
	}
	close(sv[0]);
	struct agent_frame f;
	struct cv_error err = { 0 };
	cr_assert_eq(agent_recv_frame(sv[1], &f, &err), 1, "%s", err.msg);
	cr_assert_eq(f.len, AGENT_MAX_PAYLOAD);
	for (size_t i = 0; i < AGENT_MAX_PAYLOAD; i += 4099)
		cr_assert_eq(f.data[i], (uint8_t)(i * 7));
	agent_frame_free(&f);
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(sv[1]);
}

Test(frames, non_socket_fd)
{
	/* Transport-neutral: the same calls work on a plain file (writev instead of sendmsg). */
	FILE *tmp = tmpfile();
	int fd = fileno(tmp);
	struct cv_error err = { 0 };
	cr_assert_eq(agent_send_frame(fd, AGENT_FRAME_STDOUT, "abc", 3, &err), 0, "%s", err.msg);
	lseek(fd, 0, SEEK_SET);
	struct agent_frame f;
	cr_assert_eq(agent_recv_frame(fd, &f, &err), 1);
	cr_assert_str_eq((char *)f.data, "abc");
	agent_frame_free(&f);
	fclose(tmp);
}

Test(frames, send_rejects_oversize_and_unknown_type)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	static uint8_t big[AGENT_MAX_PAYLOAD + 1];
	cr_assert_eq(agent_send_frame(sv[0], AGENT_FRAME_STDOUT, big, sizeof(big), &err), -1);
	cr_assert(strstr(err.msg, "exceeds"), "%s", err.msg);
	cr_assert_eq(agent_send_frame(sv[0], 9, "x", 1, &err), -1);
	close(sv[0]);
	close(sv[1]);
}

/* Writes raw bytes, closes the writer, and returns what agent_recv_frame makes of them. */
static int recv_raw(const void *bytes, size_t len, struct cv_error *err)
{
	int sv[2];
	pair(sv);
	cr_assert_eq(cv_write_full(sv[0], bytes, len), 0);
	close(sv[0]);
	struct agent_frame f;
	int r = agent_recv_frame(sv[1], &f, err);
	if (r > 0)
		agent_frame_free(&f);
	close(sv[1]);
	return r;
}

Test(frames, recv_rejects_oversize)
{
	uint8_t hdr[5];
	raw_header(hdr, AGENT_MAX_PAYLOAD + 1, AGENT_FRAME_STDOUT);
	struct cv_error err = { 0 };
	cr_assert_eq(recv_raw(hdr, 5, &err), -1);
	cr_assert(strstr(err.msg, "exceeds"), "%s", err.msg);
	raw_header(hdr, 0xffffffffu, AGENT_FRAME_CONTROL);
	cr_assert_eq(recv_raw(hdr, 5, &err), -1);
}

Test(frames, recv_rejects_unknown_type)
{
	uint8_t hdr[6];
	struct cv_error err = { 0 };
	raw_header(hdr, 1, 0);
	hdr[5] = 'x';
	cr_assert_eq(recv_raw(hdr, 6, &err), -1);
	cr_assert(strstr(err.msg, "unknown frame type 0"), "%s", err.msg);
	raw_header(hdr, 1, 5);
	cr_assert_eq(recv_raw(hdr, 6, &err), -1);
	raw_header(hdr, 1, 255);
	cr_assert_eq(recv_raw(hdr, 6, &err), -1);
}

Test(frames, recv_rejects_truncation)
{
	uint8_t buf[8];
	struct cv_error err = { 0 };
	raw_header(buf, 3, AGENT_FRAME_STDOUT);
	cr_assert_eq(recv_raw(buf, 3, &err), -1, "header cut short");
	cr_assert(strstr(err.msg, "header"), "%s", err.msg);
	buf[5] = 'a';
	buf[6] = 'b';
	cr_assert_eq(recv_raw(buf, 7, &err), -1, "payload cut short");
	cr_assert(strstr(err.msg, "ended inside"), "%s", err.msg);
	cr_assert_eq(recv_raw(buf, 0, &err), 0, "nothing at all is a clean end");
}

Test(reader, incremental_byte_by_byte)
{
	int sv[2];
	pair(sv);
	uint8_t stream[64];
	size_t n = 0;
	raw_header(stream, 2, AGENT_FRAME_STDOUT);
	memcpy(stream + 5, "hi", 2);
	n = 7;
	raw_header(stream + n, 0, AGENT_FRAME_STDIN);
	n += 5;
	struct agent_reader r;
	agent_reader_init(&r);
	struct cv_error err = { 0 };
	struct agent_frame f;
	int frames = 0;
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(write(sv[0], stream + i, 1), 1);
		cr_assert_eq(agent_reader_fill(&r, sv[1], &err), 1);
		int got;
		while ((got = agent_reader_next(&r, &f, &err)) == 1) {
			frames++;
			if (frames == 1) {
				cr_assert_eq(i, 6, "first frame completes with its last byte");
				cr_assert_eq(f.type, AGENT_FRAME_STDOUT);
				cr_assert_str_eq((char *)f.data, "hi");
			} else {
				cr_assert_eq(f.type, AGENT_FRAME_STDIN);
				cr_assert_eq(f.len, 0);
			}
			agent_frame_free(&f);
		}
		cr_assert_eq(got, 0);
		cr_assert_eq(agent_reader_partial(&r), i != 6 && i != n - 1);
	}
	cr_assert_eq(frames, 2);
	close(sv[0]);
	cr_assert_eq(agent_reader_fill(&r, sv[1], &err), 0, "end of stream");
	agent_reader_free(&r);
	close(sv[1]);
}

Test(reader, rejects_bad_header_before_payload)
{
	int sv[2];
	pair(sv);
	uint8_t hdr[5];
	raw_header(hdr, AGENT_MAX_PAYLOAD + 1, AGENT_FRAME_STDOUT);
	cr_assert_eq(write(sv[0], hdr, 5), 5);
	struct agent_reader r;
	agent_reader_init(&r);
	struct cv_error err = { 0 };
	struct agent_frame f;
	cr_assert_eq(agent_reader_fill(&r, sv[1], &err), 5);
	cr_assert_eq(agent_reader_next(&r, &f, &err), -1);
	raw_header(hdr, 0, 7);
	agent_reader_free(&r);
	agent_reader_init(&r);
	cr_assert_eq(write(sv[0], hdr, 5), 5);
	cr_assert_eq(agent_reader_fill(&r, sv[1], &err), 5);
	cr_assert_eq(agent_reader_next(&r, &f, &err), -1);
	cr_assert(strstr(err.msg, "unknown frame type 7"), "%s", err.msg);
	agent_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
}

/* ---- control messages ---- */

static int parse_req(const char *json, struct agent_request *req, struct cv_error *err)
{
	return agent_parse_request(json, strlen(json), req, err);
}

Test(requests, exec_full)
{
	struct agent_request req;
	struct cv_error err = { 0 };
	cr_assert_eq(parse_req("{\"op\":\"exec\",\"argv\":[\"ls\",\"-l\",\"\"],\"env\":[\"A=1\",\"B=\"],"
			       "\"cwd\":\"/tmp\",\"stdin\":true,\"token\":\"t\"}", &req, &err), 0,
		     "%s", err.msg);
	cr_assert_eq(req.op, AGENT_OP_EXEC);
	cr_assert_str_eq(req.argv[0], "ls");
	cr_assert_str_eq(req.argv[2], "");
	cr_assert_null(req.argv[3]);
	cr_assert_str_eq(req.env[1], "B=");
	cr_assert_null(req.env[2]);
	cr_assert_str_eq(req.cwd, "/tmp");
	cr_assert(req.stdin_open);
	cr_assert_str_eq(req.token, "t");
	agent_request_free(&req);
}

Test(requests, exec_minimal_defaults)
{
	struct agent_request req;
	struct cv_error err = { 0 };
	cr_assert_eq(parse_req("{\"op\":\"exec\",\"argv\":[\"true\"]}", &req, &err), 0, "%s", err.msg);
	cr_assert_null(req.env);
	cr_assert_null(req.cwd);
	cr_assert_not(req.stdin_open);
	cr_assert_null(req.token);
	agent_request_free(&req);
}

Test(requests, rejects_malformed)
{
	static const char *const bad[] = {
		"",
		"not json",
		"[1,2]",
		"\"exec\"",
		"{}",
		"{\"op\":1}",
		"{\"op\":\"frobnicate\"}",
		"{\"op\":\"exec\"}",
		"{\"op\":\"exec\",\"argv\":[]}",
		"{\"op\":\"exec\",\"argv\":[\"\"]}",
		"{\"op\":\"exec\",\"argv\":\"ls\"}",
		"{\"op\":\"exec\",\"argv\":[\"ls\",1]}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":[\"NOEQUALS\"]}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":[\"=v\"]}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":\"A=1\"}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"cwd\":\"relative\"}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"cwd\":5}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"stdin\":1}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"extra\":true}",
		"{\"op\":\"exec\",\"argv\":[\"ls\"],\"argv\":[\"rm\"]}",
		"{\"op\":\"exec\",\"argv\":[\"a\\u0000b\"]}",
		"{\"op\":\"signal\"}",
		"{\"op\":\"signal\",\"signal\":0}",
		"{\"op\":\"signal\",\"signal\":65}",
		"{\"op\":\"signal\",\"signal\":2.0}",
		"{\"op\":\"signal\",\"signal\":\"2\"}",
		"{\"op\":\"ping\",\"extra\":1}",
		"{\"op\":\"ping\",\"token\":7}",
		"{\"op\":\"poweroff\",\"now\":true}",
		"{\"op\":\"ping\"} trailing",
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(bad); i++) {
		struct agent_request req;
		struct cv_error err = { 0 };
		cr_expect_eq(parse_req(bad[i], &req, &err), -1, "accepted: %s", bad[i]);
		cr_expect_neq(err.msg[0], 0, "no message for: %s", bad[i]);
		cr_expect_null(req.argv);
	}
}

Test(requests, rejects_binary_garbage)
{
	uint8_t junk[256];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	struct agent_request req;
	struct cv_error err = { 0 };
	cr_assert_eq(agent_parse_request(junk, sizeof(junk), &req, &err), -1);
}

Test(requests, simple_ops)
{
	struct agent_request req;
	struct cv_error err = { 0 };
	cr_assert_eq(parse_req("{\"op\":\"signal\",\"signal\":15}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_SIGNAL);
	cr_assert_eq(req.signal, 15);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"ping\"}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_PING);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"poweroff\",\"token\":\"x\"}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_POWEROFF);
	agent_request_free(&req);
}

/* Receives one control frame from fd and parses it as a request. */
static void recv_req(int fd, struct agent_request *req)
{
	struct agent_frame f;
	struct cv_error err = { 0 };
	cr_assert_eq(agent_recv_frame(fd, &f, &err), 1, "%s", err.msg);
	cr_assert_eq(f.type, AGENT_FRAME_CONTROL);
	cr_assert_eq(agent_parse_request(f.data, f.len, req, &err), 0, "%s: %s", err.msg, f.data);
	agent_frame_free(&f);
}

Test(requests, encode_decode_round_trip)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	char *argv[] = { "sh", "-c", "echo \"quoted\" \\ back\nslash", NULL };
	char *env[] = { "PATH=/bin", "UTF8=h\xc3\xa9llo", NULL };
	cr_assert_eq(agent_send_exec(sv[0], argv, env, "/", true, "tok", &err), 0, "%s", err.msg);
	cr_assert_eq(agent_send_exec(sv[0], argv, NULL, NULL, false, NULL, &err), 0);
	cr_assert_eq(agent_send_signal(sv[0], 2, &err), 0);
	cr_assert_eq(agent_send_ping(sv[0], NULL, &err), 0);
	cr_assert_eq(agent_send_poweroff(sv[0], "tok", &err), 0);

	struct agent_request req;
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_EXEC);
	for (int i = 0; argv[i]; i++)
		cr_assert_str_eq(req.argv[i], argv[i]);
	cr_assert_str_eq(req.env[1], env[1]);
	cr_assert_str_eq(req.cwd, "/");
	cr_assert(req.stdin_open);
	cr_assert_str_eq(req.token, "tok");
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_null(req.env);
	cr_assert_null(req.cwd);
	cr_assert_null(req.token);
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_SIGNAL);
	cr_assert_eq(req.signal, 2);
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_PING);
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_POWEROFF);
	agent_request_free(&req);
	close(sv[0]);
	close(sv[1]);
}

Test(requests, encoder_rejects_bad_input)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	char *empty[] = { NULL };
	char *bad_utf8[] = { "ls", "\xff\xfe", NULL };
	char *ok[] = { "ls", NULL };
	cr_assert_eq(agent_send_exec(sv[0], empty, NULL, NULL, false, NULL, &err), -1);
	cr_assert_eq(agent_send_exec(sv[0], bad_utf8, NULL, NULL, false, NULL, &err), -1);
	cr_assert(strstr(err.msg, "UTF-8"), "%s", err.msg);
	cr_assert_eq(agent_send_exec(sv[0], ok, NULL, "rel", false, NULL, &err), -1);
	cr_assert_eq(agent_send_signal(sv[0], 0, &err), -1);
	close(sv[0]);
	close(sv[1]);
}

Test(requests, encoder_rejects_oversized_request)
{
	int sv[2];
	pair(sv);
	size_t n = AGENT_MAX_PAYLOAD + 100;
	char *huge = malloc(n + 1);
	memset(huge, 'a', n);
	huge[n] = 0;
	char *argv[] = { "echo", huge, NULL };
	struct cv_error err = { 0 };
	cr_assert_eq(agent_send_exec(sv[0], argv, NULL, NULL, false, NULL, &err), -1);
	cr_assert(strstr(err.msg, "exceeds"), "%s", err.msg);
	free(huge);
	close(sv[0]);
	close(sv[1]);
}

/* ---- events ---- */

static int parse_ev(const char *json, struct agent_event *ev, struct cv_error *err)
{
	return agent_parse_event(json, strlen(json), ev, err);
}

Test(events, valid)
{
	struct agent_event ev;
	struct cv_error err = { 0 };
	cr_assert_eq(parse_ev("{\"event\":\"started\",\"pid\":42}", &ev, &err), 0, "%s", err.msg);
	cr_assert_eq(ev.kind, AGENT_EV_STARTED);
	cr_assert_eq(ev.pid, 42);
	agent_event_free(&ev);
	cr_assert_eq(parse_ev("{\"event\":\"exit\",\"status\":130}", &ev, &err), 0);
	cr_assert_eq(ev.kind, AGENT_EV_EXIT);
	cr_assert_eq(ev.status, 130);
	agent_event_free(&ev);
	cr_assert_eq(parse_ev("{\"event\":\"error\",\"message\":\"boom\"}", &ev, &err), 0);
	cr_assert_str_eq(ev.message, "boom");
	agent_event_free(&ev);
	cr_assert_eq(parse_ev("{\"event\":\"pong\",\"version\":\"0.1.0\"}", &ev, &err), 0);
	cr_assert_str_eq(ev.version, "0.1.0");
	agent_event_free(&ev);
}

Test(events, rejects_malformed)
{
	static const char *const bad[] = {
		"{}",
		"{\"event\":\"started\"}",
		"{\"event\":\"started\",\"pid\":0}",
		"{\"event\":\"started\",\"pid\":\"1\"}",
		"{\"event\":\"exit\",\"status\":256}",
		"{\"event\":\"exit\",\"status\":-1}",
		"{\"event\":\"exit\",\"status\":0,\"extra\":0}",
		"{\"event\":\"error\"}",
		"{\"event\":\"error\",\"message\":null}",
		"{\"event\":\"pong\"}",
		"{\"event\":\"reboot\"}",
		"{\"op\":\"ping\"}",
		"[]",
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(bad); i++) {
		struct agent_event ev;
		struct cv_error err = { 0 };
		cr_expect_eq(parse_ev(bad[i], &ev, &err), -1, "accepted: %s", bad[i]);
	}
}

Test(events, encode_decode_round_trip)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	cr_assert_eq(agent_send_started(sv[0], 7, &err), 0);
	cr_assert_eq(agent_send_exit(sv[0], 137, &err), 0);
	cr_assert_eq(agent_send_error(sv[0], "no \"such\" file", &err), 0);
	cr_assert_eq(agent_send_error(sv[0], "bad \xff byte", &err), 0, "never silent on bad UTF-8");
	cr_assert_eq(agent_send_pong(sv[0], "9.9", &err), 0);
	int want[] = { AGENT_EV_STARTED, AGENT_EV_EXIT, AGENT_EV_ERROR, AGENT_EV_ERROR, AGENT_EV_PONG };
	for (size_t i = 0; i < CV_ARRAY_SIZE(want); i++) {
		struct agent_frame f;
		struct agent_event ev;
		cr_assert_eq(agent_recv_frame(sv[1], &f, &err), 1);
		cr_assert_eq(agent_parse_event(f.data, f.len, &ev, &err), 0, "%s", err.msg);
		cr_assert_eq((int)ev.kind, want[i]);
		if (i == 1)
			cr_assert_eq(ev.status, 137);
		if (i == 2)
			cr_assert_str_eq(ev.message, "no \"such\" file");
		agent_event_free(&ev);
		agent_frame_free(&f);
	}
	close(sv[0]);
	close(sv[1]);
}
