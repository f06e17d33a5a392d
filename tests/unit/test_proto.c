/*
 * Unit tests of the agent wire protocol (src/agent/proto.c): frame round trips over a socketpair
 * and a plain file, rejection of oversized, unknown-type and truncated frames by both decoders,
 * and strict validation of every control message and of the replies to info, freeze and thaw.
 */
#include <criterion/criterion.h>
#include <errno.h>
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

/* ---- interactive exec, resize, info, shutdown, freeze/thaw ---- */

Test(requests, exec_tty_defaults_and_sizes)
{
	struct agent_request req;
	struct cv_error err = { 0 };
	cr_assert_eq(parse_req("{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true}", &req, &err), 0,
		     "%s", err.msg);
	cr_assert(req.tty);
	cr_assert_eq(req.rows, AGENT_TTY_DEFAULT_ROWS);
	cr_assert_eq(req.cols, AGENT_TTY_DEFAULT_COLS);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"rows\":1,"
			       "\"cols\":65535,\"stdin\":true}", &req, &err), 0, "%s", err.msg);
	cr_assert_eq(req.rows, 1);
	cr_assert_eq(req.cols, 65535);
	cr_assert(req.stdin_open);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":false}", &req, &err), 0);
	cr_assert_not(req.tty);
	agent_request_free(&req);
}

Test(requests, new_ops)
{
	struct agent_request req;
	struct cv_error err = { 0 };
	cr_assert_eq(parse_req("{\"op\":\"resize\",\"rows\":50,\"cols\":132}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_RESIZE);
	cr_assert_eq(req.rows, 50);
	cr_assert_eq(req.cols, 132);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"info\",\"token\":\"t\"}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_INFO);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"shutdown\",\"action\":\"reboot\"}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_SHUTDOWN);
	cr_assert_eq(req.action, AGENT_SHUTDOWN_REBOOT);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"shutdown\",\"action\":\"poweroff\"}", &req, &err), 0);
	cr_assert_eq(req.action, AGENT_SHUTDOWN_POWEROFF);
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"poweroff\"}", &req, &err), 0);
	cr_assert_eq(req.action, AGENT_SHUTDOWN_POWEROFF, "the alias powers off");
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"freeze\"}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_FREEZE);
	cr_assert_null(req.paths, "absent paths: the default set");
	agent_request_free(&req);
	cr_assert_eq(parse_req("{\"op\":\"thaw\",\"paths\":[\"/a\",\"/b c\"]}", &req, &err), 0);
	cr_assert_eq(req.op, AGENT_OP_THAW);
	cr_assert_str_eq(req.paths[1], "/b c");
	cr_assert_null(req.paths[2]);
	agent_request_free(&req);
}

Test(requests, new_ops_reject_malformed)
{
	static const char *const bad[] = {
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":1}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":\"yes\"}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"rows\":24,\"cols\":80}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":false,\"rows\":24}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"rows\":0}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"rows\":-1}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"cols\":65536}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"cols\":80.5}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"rows\":\"24\"}",
		"{\"op\":\"exec\",\"argv\":[\"sh\"],\"tty\":true,\"rows\":null}",
		"{\"op\":\"resize\"}",
		"{\"op\":\"resize\",\"rows\":24}",
		"{\"op\":\"resize\",\"rows\":0,\"cols\":80}",
		"{\"op\":\"resize\",\"rows\":24,\"cols\":99999}",
		"{\"op\":\"resize\",\"rows\":24,\"cols\":80,\"x\":1}",
		"{\"op\":\"info\",\"verbose\":true}",
		"{\"op\":\"shutdown\"}",
		"{\"op\":\"shutdown\",\"action\":\"halt\"}",
		"{\"op\":\"shutdown\",\"action\":1}",
		"{\"op\":\"shutdown\",\"action\":\"reboot\",\"force\":true}",
		"{\"op\":\"freeze\",\"paths\":[]}",
		"{\"op\":\"freeze\",\"paths\":\"/\"}",
		"{\"op\":\"freeze\",\"paths\":[\"relative\"]}",
		"{\"op\":\"freeze\",\"paths\":[\"/\",2]}",
		"{\"op\":\"thaw\",\"paths\":[\"\"]}",
		"{\"op\":\"thaw\",\"all\":true}",
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(bad); i++) {
		struct agent_request req;
		struct cv_error err = { 0 };
		cr_expect_eq(parse_req(bad[i], &req, &err), -1, "accepted: %s", bad[i]);
		cr_expect_neq(err.msg[0], 0, "no message for: %s", bad[i]);
		cr_expect_null(req.argv);
		cr_expect_null(req.paths);
	}
}

Test(requests, freeze_path_limit)
{
	/* One over the limit is refused; the limit itself is accepted. */
	for (int extra = 0; extra <= 1; extra++) {
		size_t n = AGENT_MAX_PATHS + (size_t)extra;
		char *json = malloc(n * 8 + 64);
		cr_assert_not_null(json);
		size_t off = (size_t)sprintf(json, "{\"op\":\"freeze\",\"paths\":[");
		for (size_t i = 0; i < n; i++)
			off += (size_t)sprintf(json + off, "%s\"/p%zu\"", i ? "," : "", i % 100);
		sprintf(json + off, "]}");
		struct agent_request req;
		struct cv_error err = { 0 };
		cr_assert_eq(parse_req(json, &req, &err), extra ? -1 : 0, "%zu paths: %s", n, err.msg);
		agent_request_free(&req);
		free(json);
	}
}

Test(requests, new_ops_round_trip)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	char *argv[] = { "sh", "-i", NULL };
	struct agent_exec_spec spec = { .argv = argv, .stdin_open = true, .tty = true, .rows = 40,
					.cols = 100 };
	char *paths[] = { "/", "/data", NULL };
	cr_assert_eq(agent_send_exec_spec(sv[0], &spec, "tok", &err), 0, "%s", err.msg);
	spec.rows = spec.cols = 0;
	cr_assert_eq(agent_send_exec_spec(sv[0], &spec, NULL, &err), 0, "%s", err.msg);
	cr_assert_eq(agent_send_resize(sv[0], 25, 81, &err), 0);
	cr_assert_eq(agent_send_info_request(sv[0], NULL, &err), 0);
	cr_assert_eq(agent_send_shutdown(sv[0], AGENT_SHUTDOWN_REBOOT, "tok", &err), 0);
	cr_assert_eq(agent_send_freeze(sv[0], paths, NULL, &err), 0, "%s", err.msg);
	cr_assert_eq(agent_send_thaw(sv[0], NULL, NULL, &err), 0);

	struct agent_request req;
	recv_req(sv[1], &req);
	cr_assert(req.tty && req.stdin_open);
	cr_assert_eq(req.rows, 40);
	cr_assert_eq(req.cols, 100);
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert(req.tty);
	cr_assert_eq(req.rows, AGENT_TTY_DEFAULT_ROWS, "0 leaves the agent's default");
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_RESIZE);
	cr_assert_eq(req.rows, 25);
	cr_assert_eq(req.cols, 81);
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_INFO);
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_SHUTDOWN);
	cr_assert_eq(req.action, AGENT_SHUTDOWN_REBOOT);
	cr_assert_str_eq(req.token, "tok");
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_FREEZE);
	cr_assert_str_eq(req.paths[1], "/data");
	agent_request_free(&req);
	recv_req(sv[1], &req);
	cr_assert_eq(req.op, AGENT_OP_THAW);
	cr_assert_null(req.paths);
	agent_request_free(&req);

	/* Encoders refuse what the agent would refuse. */
	char *empty[] = { NULL };
	char *rel[] = { "x", NULL };
	cr_assert_eq(agent_send_resize(sv[0], 0, 80, &err), -1);
	cr_assert_eq(agent_send_resize(sv[0], 24, 65536, &err), -1);
	cr_assert_eq(agent_send_freeze(sv[0], empty, NULL, &err), -1);
	cr_assert_eq(agent_send_thaw(sv[0], rel, NULL, &err), -1);
	spec.rows = 70000;
	cr_assert_eq(agent_send_exec_spec(sv[0], &spec, NULL, &err), -1);
	close(sv[0]);
	close(sv[1]);
}

/* Receives one control frame and parses it as a reply. */
static void recv_reply(int fd, struct agent_reply *reply)
{
	struct agent_frame f;
	struct cv_error err = { 0 };
	cr_assert_eq(agent_recv_frame(fd, &f, &err), 1, "%s", err.msg);
	cr_assert_eq(agent_parse_reply(f.data, f.len, reply, &err), 0, "%s: %s", err.msg, f.data);
	agent_frame_free(&f);
}

Test(replies, info_round_trip)
{
	int sv[2];
	pair(sv);
	struct agent_cpu_times cpus[2] = {
		{ .id = 0, .user = 1, .nice = 2, .system = 3, .idle = 4, .iowait = 5, .irq = 6,
		  .softirq = 7, .steal = 8 },
		{ .id = 3, .idle = 10000000000ull },
	};
	struct agent_fs_usage fs[1] = {
		{ .path = "/mnt/with space", .type = "ext4", .source = "/dev/vda", .size = 1ull << 40,
		  .used = 12345, .available = 999, .readonly = true },
	};
	struct agent_info info = { .hostname = "h\xffst", .kernel = "6.1.0", .uptime = 12.5,
				   .load = { 0.5, 0.25, 0 }, .mem_total = 1ull << 33,
				   .mem_free = 100, .mem_available = 200, .cpus = cpus, .ncpus = 2,
				   .fs = fs, .nfs = 1 };
	struct cv_error err = { 0 };
	cr_assert_eq(agent_send_info_event(sv[0], &info, &err), 0, "%s", err.msg);
	struct agent_reply r;
	recv_reply(sv[1], &r);
	cr_assert_eq(r.kind, AGENT_REPLY_INFO);
	cr_assert_str_eq(r.info.hostname, "h?st", "non-UTF-8 bytes are replaced, not dropped");
	cr_assert_str_eq(r.info.kernel, "6.1.0");
	cr_assert_float_eq(r.info.uptime, 12.5, 1e-9);
	cr_assert_float_eq(r.info.load[1], 0.25, 1e-9);
	cr_assert_eq(r.info.mem_total, 1ull << 33);
	cr_assert_eq(r.info.mem_available, 200);
	cr_assert_eq(r.info.ncpus, 2);
	cr_assert_eq(r.info.cpus[0].steal, 8);
	cr_assert_eq(r.info.cpus[1].id, 3);
	cr_assert_eq(r.info.cpus[1].idle, 10000000000ull);
	cr_assert_eq(r.info.nfs, 1);
	cr_assert_str_eq(r.info.fs[0].path, "/mnt/with space");
	cr_assert_eq(r.info.fs[0].size, 1ull << 40);
	cr_assert(r.info.fs[0].readonly);
	agent_reply_free(&r);
	close(sv[0]);
	close(sv[1]);
}

Test(replies, fs_results_and_errors)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	struct agent_fs_result res = { 0 };
	cr_assert_eq(agent_fs_result_add_path(&res, "/a", &err), 0);
	cr_assert_eq(agent_fs_result_add_error(&res, "/b", "already frozen", &err), 0);
	cr_assert_eq(agent_send_fs_result(sv[0], &res, &err), 0, "%s", err.msg);
	res.thaw = true;
	cr_assert_eq(agent_send_fs_result(sv[0], &res, &err), 0, "%s", err.msg);
	agent_fs_result_free(&res);
	res.thaw = false;
	cr_assert_eq(agent_send_fs_result(sv[0], &res, &err), 0, "an empty result is still a list");
	cr_assert_eq(agent_send_error(sv[0], "boom", &err), 0);

	struct agent_reply r;
	recv_reply(sv[1], &r);
	cr_assert_eq(r.kind, AGENT_REPLY_FROZEN);
	cr_assert_eq(r.fs.npaths, 1);
	cr_assert_str_eq(r.fs.paths[0], "/a");
	cr_assert_eq(r.fs.nerrors, 1);
	cr_assert_str_eq(r.fs.errors[0].path, "/b");
	cr_assert_str_eq(r.fs.errors[0].message, "already frozen");
	agent_reply_free(&r);
	recv_reply(sv[1], &r);
	cr_assert_eq(r.kind, AGENT_REPLY_THAWED);
	cr_assert(r.fs.thaw);
	agent_reply_free(&r);
	recv_reply(sv[1], &r);
	cr_assert_eq(r.fs.npaths, 0);
	cr_assert_not_null(r.fs.paths);
	cr_assert_eq(r.fs.nerrors, 0);
	agent_reply_free(&r);
	recv_reply(sv[1], &r);
	cr_assert_eq(r.kind, AGENT_REPLY_ERROR);
	cr_assert_str_eq(r.message, "boom");
	agent_reply_free(&r);
	close(sv[0]);
	close(sv[1]);
}

Test(replies, reject_malformed)
{
	static const char *const bad[] = {
		"{\"event\":\"pong\",\"version\":\"1\"}",
		"{\"event\":\"frozen\"}",
		"{\"event\":\"frozen\",\"paths\":[],\"errors\":{}}",
		"{\"event\":\"frozen\",\"paths\":[1],\"errors\":[]}",
		"{\"event\":\"thawed\",\"paths\":[],\"errors\":[{\"path\":\"/\"}]}",
		"{\"event\":\"thawed\",\"paths\":[],\"errors\":[\"x\"]}",
		"{\"event\":\"thawed\",\"paths\":[],\"errors\":[],\"extra\":1}",
		"{\"event\":\"info\"}",
		"{\"event\":\"info\",\"hostname\":\"h\",\"kernel\":\"k\",\"uptime\":1,\"load\":[1,2],"
		"\"memory\":{\"total\":1,\"free\":1,\"available\":1},\"cpus\":[],\"filesystems\":[]}",
		"{\"event\":\"info\",\"hostname\":\"h\",\"kernel\":\"k\",\"uptime\":-1,\"load\":[1,2,3],"
		"\"memory\":{\"total\":1,\"free\":1,\"available\":1},\"cpus\":[],\"filesystems\":[]}",
		"{\"event\":\"info\",\"hostname\":\"h\",\"kernel\":\"k\",\"uptime\":1,\"load\":[1,2,3],"
		"\"memory\":{\"total\":-1,\"free\":1,\"available\":1},\"cpus\":[],\"filesystems\":[]}",
		"{\"event\":\"info\",\"hostname\":\"h\",\"kernel\":\"k\",\"uptime\":1,\"load\":[1,2,3],"
		"\"memory\":{\"total\":1,\"free\":1,\"available\":1},\"cpus\":[{\"cpu\":0}],"
		"\"filesystems\":[]}",
		"{\"event\":\"info\",\"hostname\":\"h\",\"kernel\":\"k\",\"uptime\":1,\"load\":[1,2,3],"
		"\"memory\":{\"total\":1,\"free\":1,\"available\":1},\"cpus\":[],"
		"\"filesystems\":[{\"path\":\"/\",\"type\":\"ext4\",\"source\":\"x\",\"size\":1,"
		"\"used\":1,\"available\":1,\"readonly\":0}]}",
	};
	for (size_t i = 0; i < CV_ARRAY_SIZE(bad); i++) {
		struct agent_reply r;
		struct cv_error err = { 0 };
		cr_expect_eq(agent_parse_reply(bad[i], strlen(bad[i]), &r, &err), -1, "accepted: %s",
			     bad[i]);
	}
	/* The stream-event parser does not take query replies (clients switch over its kinds). */
	struct agent_event ev;
	struct cv_error err = { 0 };
	const char *frozen = "{\"event\":\"frozen\",\"paths\":[],\"errors\":[]}";
	cr_assert_eq(agent_parse_event(frozen, strlen(frozen), &ev, &err), -1);
}

/*
 * The send queue of full-duplex loops: a flush writes what the peer takes and returns instead of
 * waiting, later flushes continue mid-frame, and the frames arrive whole and in order.
 */
Test(outq, flush_never_waits_and_frames_arrive_in_order)
{
	int sv[2];
	pair(sv);
	struct cv_error err = { 0 };
	struct agent_outq q;
	agent_outq_init(&q);
	enum { BIG = 600 << 10 };
	uint8_t *big = malloc(BIG);
	cr_assert_not_null(big);
	for (size_t i = 0; i < BIG; i++)
		big[i] = (uint8_t)(i * 7 + 3);
	cr_assert_eq(agent_outq_frame(&q, AGENT_FRAME_STDIN, big, BIG, &err), 0, "%s", err.msg);
	cr_assert_eq(agent_queue_signal(&q, 15, &err), 0, "%s", err.msg);
	cr_assert_eq(agent_outq_frame(&q, AGENT_FRAME_STDIN, NULL, 0, &err), 0);
	cr_assert_eq(agent_queue_resize(&q, 0, 80, &err), -1, "a bad size is refused, not queued");
	size_t queued = agent_outq_pending(&q);
	cr_assert_gt(queued, BIG);

	/* Nobody reads yet: the socket buffer takes part of it, the rest stays queued. */
	cr_assert_eq(agent_outq_flush(&q, sv[0], &err), 0, "%s", err.msg);
	cr_assert_gt(agent_outq_pending(&q), 0);
	cr_assert_lt(agent_outq_pending(&q), queued);

	struct agent_reader rd;
	agent_reader_init(&rd);
	struct agent_frame f[3];
	int got = 0;
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	for (int spins = 0; got < 3 && spins < 100000; spins++) {
		cr_assert_eq(agent_outq_flush(&q, sv[0], &err), 0, "%s", err.msg);
		if (agent_reader_fill(&rd, sv[1], &err) < 0)
			cr_assert_eq(errno, EAGAIN, "%s", err.msg);
		while (got < 3 && agent_reader_next(&rd, &f[got], &err) == 1)
			got++;
	}
	cr_assert_eq(got, 3);
	cr_assert_eq(agent_outq_pending(&q), 0);
	cr_assert_eq(f[0].type, AGENT_FRAME_STDIN);
	cr_assert_eq(f[0].len, BIG);
	cr_assert(memcmp(f[0].data, big, BIG) == 0);
	struct agent_request req;
	cr_assert_eq(f[1].type, AGENT_FRAME_CONTROL);
	cr_assert_eq(agent_parse_request(f[1].data, f[1].len, &req, &err), 0, "%s", err.msg);
	cr_assert_eq(req.op, AGENT_OP_SIGNAL);
	cr_assert_eq(req.signal, 15);
	agent_request_free(&req);
	cr_assert_eq(f[2].type, AGENT_FRAME_STDIN);
	cr_assert_eq(f[2].len, 0);
	for (int i = 0; i < 3; i++)
		agent_frame_free(&f[i]);

	/* A peer that is gone is an error the caller can tell apart (EPIPE), not a SIGPIPE. */
	close(sv[1]);
	cr_assert_eq(agent_outq_frame(&q, AGENT_FRAME_STDIN, "x", 1, &err), 0);
	cr_assert_eq(agent_outq_flush(&q, sv[0], &err), -1);
	cr_assert_eq(errno, EPIPE, "%s", strerror(errno));
	agent_reader_free(&rd);
	agent_outq_free(&q);
	free(big);
	close(sv[0]);
}
