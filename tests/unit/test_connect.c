/* SPDX-License-Identifier: Apache-2.0 */
/* The parts of the mTLS proof that need no server: URLs and the MQTT packets written for the
 * WebSocket transport (the connections themselves are tested in tests/integration). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "connect.h"
#include "connect_transport.h"
#include "error.h"

static void test_urls(void **state)
{
    struct connect_url u;

    (void)state;
    assert_int_equal(connect_parse_url("mqtts://edge.example", &u), 0);
    assert_string_equal(u.scheme, "mqtts");
    assert_string_equal(u.host, "edge.example");
    assert_int_equal(u.port, 8883);
    assert_string_equal(u.host_port, "edge.example:8883");

    assert_int_equal(connect_parse_url("wss://127.0.0.1:9001/mqtt", &u), 0);
    assert_int_equal(u.port, 9001);
    assert_string_equal(u.path, "/mqtt");

    assert_int_equal(connect_parse_url("https://[::1]/a/b?c=d", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 443);
    assert_string_equal(u.path, "/a/b?c=d");
    assert_string_equal(u.host_port, "[::1]:443");

    assert_int_equal(connect_parse_url("mqtts://h:8883/", &u), 0);
}

static void test_bad_urls(void **state)
{
    const char *bad[] = {
        "mqtt://h:1883", "http://h/", "mqtts://", "mqtts://:8883", "mqtts://h:0",
        "mqtts://h:65536", "mqtts://h:12x", "mqtts://u@h", "mqtts://h/topic", "wss//h",
        "https://[::1/", "h:8883", "",
    };
    struct connect_url u;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        prov_error_clear();
        assert_int_equal(connect_parse_url(bad[i], &u), PROV_ERR_USAGE);
        /* the message names the URL */
        assert_non_null(strstr(prov_error_message(), bad[i]));
    }
}

static void test_connect_packet(void **state)
{
    static const unsigned char want[] = {
        0x10, 26, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 14,
        'p', 'r', 'o', 'o', 'f', '-', '0', '1', '2', '3', '4', '5', '6', '7',
    };
    unsigned char buf[64];

    (void)state;
    assert_int_equal(connect_mqtt_connect_packet("proof-01234567", buf, sizeof(buf)),
                     sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    assert_int_equal(connect_mqtt_connect_packet("proof-01234567", buf, 20), 0);
}

static void test_publish_packet(void **state)
{
    static const unsigned char want[] = {0x32, 9, 0, 3, 'a', '/', 'b', 0x12, 0x34, 'o', 'k'};
    unsigned char buf[400];
    char topic[201];

    (void)state;
    assert_int_equal(connect_mqtt_publish_packet("a/b", "ok", 0x1234, buf, sizeof(buf)),
                     sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    /* a remaining length over 127 takes two bytes (MQTT 3.1.1 §2.2.3): 2 + 200 + 2 + 2 = 206 */
    memset(topic, 't', 200);
    topic[200] = '\0';
    assert_int_equal(connect_mqtt_publish_packet(topic, "ok", 1, buf, sizeof(buf)), 3 + 206);
    assert_int_equal(buf[1], (206 % 128) | 0x80);
    assert_int_equal(buf[2], 206 / 128);
}

static void test_outcome_names(void **state)
{
    (void)state;
    assert_string_equal(prov_connect_outcome_name(PROV_CONNECT_OK), "ok");
    assert_string_equal(prov_connect_outcome_name(PROV_CONNECT_SERVER_REFUSED), "server-refused");
    assert_string_equal(prov_connect_outcome_name(PROV_CONNECT_CLIENT_REFUSED), "client-refused");
    assert_string_equal(prov_connect_outcome_name((enum prov_connect_outcome)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_connect_packet),
        cmocka_unit_test(test_publish_packet),
        cmocka_unit_test(test_outcome_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
