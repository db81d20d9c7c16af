"""Edge-case test vectors for fastflow's subject matcher and MQTT translation.

The vector *data* (subject / pattern / topic / expected result) is taken from
authoritative upstream sources and adapted to fastflow's API and its stricter
syntax.  No upstream code is reused; each group cites where its vectors came
from.  Sources (snapshots read while writing this file):

  [NATS-SL]   nats-io/nats-server  server/sublist_test.go   (commit 1787eee035cf)
  [NATS-MQ]   nats-io/nats-server  server/mqtt_test.go      (same commit)
  [NATS-DOC]  https://docs.nats.io/nats-concepts/subjects and the NATS C client
              docs, "wildcards" group (nats-io.github.io/nats.c)
  [MOSQ-UT]   eclipse/mosquitto    test/unit/util_topic_test.c  (commit fb9b1153924a)
  [MOSQ-SH]   eclipse/mosquitto    test/broker/02-shared-qos0-v5.py, src/topic_tok.c
  [MQTT-311]  MQTT Version 3.1.1, OASIS Standard, section 4.7 (topic names and
              filters), including its non-normative examples
  [MQTT-5]    MQTT Version 5.0, OASIS Standard, sections 4.7.3 and 4.8.2
              ([MQTT-4.7.3-3] 65,535-byte limit, [MQTT-4.8.2-1], [MQTT-4.8.2-2])

fastflow is STRICTER than nats-server in a few places (see the comments marked
"DIFFERENCE"): a '*' or '>' character inside a token is an error (nats-server
treats it as a literal), every ASCII control character is an error, a subject
is limited to 1024 UTF-8 bytes / 128 tokens, and the '$' rule applies to every
subscription (nats-server applies it only to MQTT subscriptions).
"""

from collections import Counter

import pytest

import fastflow
from fastflow import (
    Matcher,
    SubjectError,
    mqtt_filter_to_patterns,
    mqtt_topic_to_subject,
    subject_to_mqtt_topic,
    validate_pattern,
    validate_subject,
)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _match_one(pattern, subject):
    """Add ``pattern`` to a fresh Matcher and return match(subject)."""
    m = Matcher()
    m.add(pattern, "v")
    return m.match(subject)


def _mqtt_match(mqtt_filter, topic):
    """Translate an MQTT filter + topic, route through a fresh Matcher."""
    patterns, group = mqtt_filter_to_patterns(mqtt_filter)
    m = Matcher()
    for p in patterns:
        m.add(p, mqtt_filter, queue=group)
    return m.match(mqtt_topic_to_subject(topic))


def _tokens(n, last="t"):
    """A subject/pattern of exactly n tokens ("t.t.....<last>")."""
    return ".".join(["t"] * (n - 1) + [last])


E_ACUTE = "\u00e9"  # 2 bytes in UTF-8


# ---------------------------------------------------------------------------
# (0) error type
# ---------------------------------------------------------------------------

def test_subject_error_hierarchy():
    assert issubclass(SubjectError, ValueError)
    assert issubclass(SubjectError, fastflow.FastflowError)


# ---------------------------------------------------------------------------
# (1) validity vectors: validate_pattern / validate_subject
# ---------------------------------------------------------------------------

VALID_PATTERNS = [
    # [NATS-SL] TestSublistValidSubjects (the ones that are valid in both)
    "foo",
    "foo.bar.*",
    "foo.bar.>",
    "*",
    ">",
    # [NATS-SL] TestSubjectIsLiteral (non-literal but valid patterns)
    "foo.*",
    "foo.>",
    "foo.*.>",
    "foo.*.bar",
    # [NATS-SL] TestSublistRemoveCleanupWildcards
    "a.b.*.d.e.>",
    # [NATS-SL] Benchmark_SublistMatchLiteral (all-wildcard pattern)
    "*.*.*.*.*.*.*.*.*.*",
    # '$'-prefixed first token is an ordinary literal in a pattern
    "$SYS.>",
    "$SYS.*",
    # tokens produced by the MQTT mapping ('/' is an ordinary character)
    "foo./.*",
    "foo.bar//baz.>",
    # non-ASCII UTF-8 is allowed ([NATS-DOC]: any UTF-8 except whitespace)
    "ord\u00e8rs.\u00fc\u00df.*",
    # limits: exactly 128 tokens / exactly 1024 UTF-8 bytes
    pytest.param(_tokens(128, last=">"), id="128-tokens-ending-in-fwc"),
    pytest.param(_tokens(128, last="*"), id="128-tokens-ending-in-pwc"),
    pytest.param("a" * 1024, id="1024-ascii-bytes"),
    pytest.param(E_ACUTE * 512, id="1024-utf8-bytes-512-chars"),
]

INVALID_PATTERNS = [
    # [NATS-SL] TestSublistValidSubjects / TestSublistInvalidSubjectsInsert /
    # TestSublistBadSubjectOnRemove -- invalid in nats-server too
    ".",
    ".foo",
    "foo.",
    "foo..bar",
    "foo.bar..baz",
    "a.b..d",
    ">.bar",
    "foo.>.bar",
    "a.>.b",
    pytest.param("foo.bar.baz.\x00", id="embedded-NUL"),
    # DIFFERENCE: nats-server TestSublistValidSubjects accepts all of these
    # (wildcard characters inside a token are literals there); fastflow
    # rejects a '*' or '>' character that is not a whole token.
    "foo*",
    "foo**",
    "foo.**",
    "foo*bar",
    "foo.*bar",
    "foo*.bar",
    "*bar",
    "foo>",
    "foo.>>",
    "foo>bar",
    "foo.>bar",
    "foo>.bar",
    ">bar",
    # [NATS-SL] TestSublistInsertWithWildcardsAsLiterals (literal in nats)
    "foo.*-",
    "foo.>-",
    # [NATS-SL] TestSublistMatchLiterals "wildcards as literals" (literal in nats)
    "foo.***.bar",
    "foo.>>>.bar",
    # '>' must be last even when followed by another wildcard
    ">.>",
    ">.*",
    # empty / whitespace / control characters ([NATS-DOC]: no whitespace;
    # DIFFERENCE: nats-server only rejects NUL, space, \t \n \r \f; fastflow
    # rejects every byte < 0x20 and 0x7f)
    pytest.param("", id="empty"),
    pytest.param(" ", id="space-only"),
    pytest.param("foo bar", id="space"),
    pytest.param("foo\tbar", id="tab"),
    pytest.param("foo.\nbar", id="newline"),
    pytest.param("foo\r", id="carriage-return"),
    pytest.param("\x0cfoo", id="form-feed"),
    pytest.param("foo.\x01.*", id="ctrl-0x01"),
    pytest.param("foo.\x7f", id="DEL-0x7f"),
    # limits: 129 tokens / 1025 bytes (also 513 two-byte chars = 1026 bytes)
    pytest.param(_tokens(129, last=">"), id="129-tokens"),
    pytest.param("a" * 1025, id="1025-ascii-bytes"),
    pytest.param(E_ACUTE * 513, id="1026-utf8-bytes-513-chars"),
]


@pytest.mark.parametrize("pattern", VALID_PATTERNS)
def test_validate_pattern_accepts(pattern):
    assert validate_pattern(pattern) is None


@pytest.mark.parametrize("pattern", VALID_PATTERNS)
def test_matcher_add_accepts_valid_pattern(pattern):
    m = Matcher()
    m.add(pattern, "v")
    assert len(m) == 1


@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_validate_pattern_rejects(pattern):
    with pytest.raises(SubjectError):
        validate_pattern(pattern)


@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_matcher_add_rejects_invalid_pattern(pattern):
    # [NATS-SL] TestSublistInvalidSubjectsInsert: Insert() returns
    # ErrInvalidSubject; here add() raises and nothing is stored.
    m = Matcher()
    with pytest.raises(SubjectError):
        m.add(pattern, "v")
    assert len(m) == 0


VALID_SUBJECTS = [
    # [NATS-SL] TestSublistValidLiteralSubjects / TestSubjectIsLiteral
    "foo",
    "foo.bar",
    # [NATS-SL] TestSublistMatchLiterals
    "stats.test.22",
    # '$' subjects are ordinary publish subjects
    "$SYS.foo",
    "a.$b",
    # [NATS-MQ] TestMQTTTopicAndSubjectConversion outputs are valid subjects
    "/./",
    "foo//bar.baz",
    "//.foo.//",
    "ord\u00e8rs.\u00fc\u00df",
    pytest.param(_tokens(128), id="128-tokens"),
    pytest.param("a" * 1024, id="1024-ascii-bytes"),
    pytest.param(E_ACUTE * 512, id="1024-utf8-bytes-512-chars"),
]

INVALID_SUBJECTS = [
    # [NATS-SL] TestSublistValidLiteralSubjects -- invalid in nats-server too
    ".foo",
    "foo.",
    "foo..bar",
    "foo.bar.*",
    "foo.bar.>",
    "*",
    ">",
    # [NATS-SL] TestSubjectIsLiteral non-literals: wildcards not allowed
    # in a publish subject
    "foo.*.>",
    "foo.*.bar",
    # [NATS-SL] TestSublistMatchWithEmptyTokens
    # DIFFERENCE: nats-server Match() silently returns no result for these;
    # fastflow raises SubjectError.
    "..foo",
    "foo..",
    "foo...bar",
    # DIFFERENCE: nats-server TestSublistValidLiteralSubjects accepts these
    # as literal subjects; fastflow rejects '*'/'>' inside a token.
    "foo*",
    "foo**",
    "foo.**",
    "foo*bar",
    "foo.*bar",
    "*bar",
    "foo>",
    "foo>>",
    "foo>.bar",
    ">bar",
    # empty / whitespace / control
    pytest.param("", id="empty"),
    pytest.param("foo bar", id="space"),
    pytest.param("foo\tbar", id="tab"),
    pytest.param("foo.bar.baz.\x00", id="embedded-NUL"),
    pytest.param("foo\x1fbar", id="ctrl-0x1f"),
    pytest.param("\x7f", id="DEL-0x7f"),
    # limits
    pytest.param(_tokens(129), id="129-tokens"),
    pytest.param("a" * 1025, id="1025-ascii-bytes"),
    pytest.param(E_ACUTE * 513, id="1026-utf8-bytes-513-chars"),
]


@pytest.mark.parametrize("subject", VALID_SUBJECTS)
def test_validate_subject_accepts(subject):
    assert validate_subject(subject) is None


@pytest.mark.parametrize("subject", VALID_SUBJECTS)
def test_match_accepts_valid_subject(subject):
    assert Matcher().match(subject) == []


@pytest.mark.parametrize("subject", INVALID_SUBJECTS)
def test_validate_subject_rejects(subject):
    with pytest.raises(SubjectError):
        validate_subject(subject)


@pytest.mark.parametrize("subject", INVALID_SUBJECTS)
def test_match_rejects_invalid_subject(subject):
    m = Matcher()
    m.add(">", "plain")
    m.add(">", "queued", queue="q")
    with pytest.raises(SubjectError):
        m.match(subject)


def test_error_messages():
    # message format from the fastflow spec; checked loosely
    with pytest.raises(SubjectError, match=r"^invalid subject 'orders\.\.eu': .*empty token"):
        validate_subject("orders..eu")
    with pytest.raises(SubjectError, match=r"^invalid pattern 'orders\.\.eu': .*empty token"):
        validate_pattern("orders..eu")
    with pytest.raises(SubjectError, match=r"^invalid subject 'orders\.\.eu': .*empty token"):
        Matcher().match("orders..eu")
    with pytest.raises(SubjectError, match=r"^invalid pattern 'foo\.>\.bar': "):
        Matcher().add("foo.>.bar", 1)
    with pytest.raises(SubjectError, match=r"^invalid subject 'foo\.bar\.\*': "):
        validate_subject("foo.bar.*")


# ---------------------------------------------------------------------------
# (2) matching vectors: (pattern, subject, expected)
# ---------------------------------------------------------------------------

TEN_FOOS = ".".join(["foo"] * 10)

MATCH_VECTORS = [
    # [NATS-SL] TestSublistSimple / SimpleMultiTokens / PartialWildcard /
    # PartialWildcardAtEnd / FullWildcard / RemoveWildcard
    ("foo", "foo", True),
    ("foo.bar.baz", "foo.bar.baz", True),
    ("a.*.c", "a.b.c", True),
    ("a.b.*", "a.b.c", True),
    ("a.>", "a.b.c", True),
    ("a.b.*.d", "a.b.c.d", True),
    ("a.b.>", "a.b.c.d", True),
    # [NATS-SL] TestSublistRemove (a shorter literal is a different subject)
    ("a.b.c", "a.b.c.d", False),
    # [NATS-SL] TestSublistTwoTokenPubMatchSingleTokenSub (bug report #18)
    ("foo", "foo.bar", False),
    # [NATS-SL] TestSublistMatchLiterals -- matchLiteral(subject, pattern);
    # its ("foo","foo") and ("foo.bar","foo") cases already appear above
    ("bar", "foo", False),
    ("*", "foo", True),
    (">", "foo", True),
    (">", "foo.bar", True),
    ("foo.>", "foo.bar", True),
    ("bar.>", "foo.bar", False),
    ("stats.>", "stats.test.22", True),
    ("stats.*.*", "stats.test.22", True),
    ("stats.test.foos", "stats.test.foos", True),
    ("stats.test.foo", "stats.test.foos", False),
    ("stats.test.*", "stats.test", False),
    ("stats.*", "stats.test.foos", False),
    ("stats.*.*.foos", "stats.test.foos", False),
    # [NATS-DOC] NATS C client wildcard docs
    ("foo.*", "foo.bar", True),
    ("foo.*", "foo.baz", True),
    ("foo.*", "foo.bar.baz", False),  # too many elements
    ("foo.*", "bar.foo", False),      # does not start with foo
    ("foo.>", "foo.bar.baz", True),
    ("foo.>", "foo", False),          # '>' needs at least one token
    ("foo.>", "bar.baz", False),
    # [NATS-SL] Benchmark_SublistMatchLiteral: every pattern matches TEN_FOOS
    (TEN_FOOS, TEN_FOOS, True),
    (".".join(["foo"] * 9 + [">"]), TEN_FOOS, True),
    ("foo.foo.>", TEN_FOOS, True),
    (".".join(["foo"] * 9 + ["*"]), TEN_FOOS, True),
    ("foo.foo.foo.foo.foo.*.*.*.*.*", TEN_FOOS, True),
    ("foo.*.*.*.*.*.*.*.*.*", TEN_FOOS, True),
    ("*.*.*.*.*.*.*.*.*.*", TEN_FOOS, True),
    # ... and the off-by-one neighbours (derived, not in the benchmark)
    (".".join(["foo"] * 10 + [">"]), TEN_FOOS, False),
    (".".join(["*"] * 9), TEN_FOOS, False),
    (".".join(["*"] * 11), TEN_FOOS, False),
    # case sensitivity ([MQTT-311] 4.7.3 "ACCOUNTS" vs "Accounts"; NATS
    # subjects are case sensitive too per [NATS-DOC])
    ("ACCOUNTS", "Accounts", False),
    # tokens containing '/' (as produced by the MQTT mapping) are literals
    ("foo./.*", "foo./.bar", True),
    ("/.*", "/./", True),
    # -- the '$' rule ------------------------------------------------------
    # fastflow spec examples
    (">", "$SYS.foo", False),
    ("*.foo", "$SYS.foo", False),
    ("$SYS.>", "$SYS.foo", True),
    ("$SYS.*", "$SYS.foo", True),
    ("a.*", "a.$b", True),
    # [NATS-MQ] TestMQTTSubjectWildcardStart: "*", "#" (">") and "*/foo"
    # ("*.foo") subscribers get "foo" / "foo.foo" but nothing on "$JS.foo".
    # DIFFERENCE: in nats-server this rule applies to MQTT subscriptions only;
    # a core NATS ">" subscription does receive "$JS.foo". fastflow applies
    # it to every subscription.
    ("*", "foo", True),
    (">", "foo", True),
    ("*.foo", "foo.foo", True),
    (">", "$JS.foo", False),
    ("*.foo", "$JS.foo", False),
    # [MQTT-311] 4.7.2 non-normative examples, in NATS syntax
    ("*.monitor.Clients", "$SYS.monitor.Clients", False),
    ("$SYS.>", "$SYS.monitor.Clients", True),
    ("$SYS.monitor.*", "$SYS.monitor.Clients", True),
    # [MOSQ-UT] TEST_valid_no_matching "$BOB/bar" vs "$SYS/bar"
    ("$BOB.bar", "$SYS.bar", False),
    # edges of the rule (derived): only the FIRST token, only a LEADING '$'
    ("*", "$", False),
    (">", "$", False),
    ("$", "$", True),
    (">", "x$.foo", True),
    ("a.>", "a.$b.c", True),
    ("*.$b", "a.$b", True),
    ("$SYS.>", "$SYS", False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), MATCH_VECTORS)
def test_match_vectors(pattern, subject, expected):
    assert _match_one(pattern, subject) == (["v"] if expected else [])


def test_add_accepts_bytes_pattern():
    m = Matcher()
    m.add(b"foo.*", "v")
    assert m.match("foo.bar") == ["v"]
    assert m.match("foo") == []


def test_insert_count():
    # [NATS-SL] TestSublistInsertCount
    m = Matcher()
    handles = [m.add("foo", 1), m.add("bar", 2), m.add("foo.bar", 3)]
    assert all(isinstance(h, int) for h in handles)
    assert len(set(handles)) == 3
    assert len(m) == 3


def test_remove_wildcard_sequence():
    # [NATS-SL] TestSublistRemoveWildcard
    m = Matcher()
    h_lit = m.add("a.b.c.d", "lit")
    h_pwc = m.add("a.b.*.d", "pwc")
    h_fwc = m.add("a.b.>", "fwc")
    assert len(m) == 3
    assert sorted(m.match("a.b.c.d")) == ["fwc", "lit", "pwc"]
    m.remove(h_lit)
    assert len(m) == 2
    m.remove(h_fwc)
    assert len(m) == 1
    assert m.match("a.b.c.d") == ["pwc"]
    m.remove(h_pwc)
    assert len(m) == 0
    assert m.match("a.b.c.d") == []


@pytest.mark.parametrize("cache_size", [65536, 1])
def test_cache_sees_adds_and_removes(cache_size):
    # [NATS-SL] TestSublistCache: results must never come from a stale cache.
    m = Matcher(cache_size=cache_size)
    h_lit = m.add("a.b.c.d", "lit")
    assert m.match("a.b.c.d") == ["lit"]          # now (possibly) cached
    h_pwc = m.add("a.b.*.d", "pwc")
    h_fwc = m.add("a.b.>", "fwc")
    assert sorted(m.match("a.b.c.d")) == ["fwc", "lit", "pwc"]
    m.remove(h_lit)
    assert sorted(m.match("a.b.c.d")) == ["fwc", "pwc"]
    m.remove(h_fwc)
    m.remove(h_pwc)
    assert m.match("a.b.c.d") == []
    # [NATS-SL] TestSublistCache also floods the cache with distinct subjects
    m.add("foo-7", "seven")
    for i in range(200):
        assert m.match(f"foo-{i}") == (["seven"] if i == 7 else [])
    assert m.match("a.b.c.d") == []
    assert m.match("foo-7") == ["seven"]


def test_remove_with_large_subs():
    # [NATS-SL] TestSublistRemoveWithLargeSubs: 2*plistMin (512) subs on one
    # subject, remove one in the middle, the first and the last.
    m = Matcher()
    handles = [m.add("foo", i) for i in range(512)]
    assert len(m.match("foo")) == 512
    for h in (handles[256], handles[0], handles[-1]):
        m.remove(h)
    result = m.match("foo")
    assert len(result) == 509
    assert set(result) == set(range(1, 511)) - {256}
    assert len(m) == 509


def test_same_value_added_twice_is_returned_twice():
    # fastflow spec; overlapping patterns as in [NATS-SL] TestSublistRaceOnMatch
    m = Matcher()
    m.add("foo.*", "v")
    m.add("foo.bar", "v")
    assert m.match("foo.bar") == ["v", "v"]
    assert m.match("foo.baz") == ["v"]
    h1 = m.add("x", "w")
    m.add("x", "w")
    assert m.match("x") == ["w", "w"]
    m.remove(h1)
    assert m.match("x") == ["w"]


# ---------------------------------------------------------------------------
# (3) MQTT translation, validity and matching
# ---------------------------------------------------------------------------

# [NATS-MQ] TestMQTTTopicAndSubjectConversion (+ TestMQTTTopicWithDot):
# (MQTT topic name, NATS subject); the mapping must round-trip.
MQTT_TOPIC_CONVERSION = [
    ("/", "/./"),
    ("//", "/././"),
    ("foo", "foo"),
    ("/foo", "/.foo"),
    ("//foo", "/./.foo"),
    ("///foo/", "/././.foo./"),
    ("//.foo.//", "/././/foo//././"),
    ("foo/bar", "foo.bar"),
    ("/foo/bar/", "/.foo.bar./"),
    ("bar/", "bar./"),
    ("bar//", "bar././"),
    ("foo//bar", "foo./.bar"),
    ("foo///bar", "foo././.bar"),
    (".", "//"),
    ("..", "////"),
    ("./", "//./"),
    (".//.", "//././/"),
    ("././.", "//.//.//"),
    (".foo", "//foo"),
    ("foo.", "foo//"),
    ("foo../bar/.", "foo////.bar.//"),
    ("foo.bar/baz", "foo//bar.baz"),
    ("spBv1.0/plant1", "spBv1//0.plant1"),
]


@pytest.mark.parametrize(("topic", "subject"), MQTT_TOPIC_CONVERSION)
def test_mqtt_topic_conversion_roundtrip(topic, subject):
    assert mqtt_topic_to_subject(topic) == subject
    assert subject_to_mqtt_topic(subject) == topic
    assert validate_subject(subject) is None


# Topic names that mqtt_topic_to_subject must reject (SubjectError).
MQTT_BAD_TOPICS = [
    # [NATS-MQ] TestMQTTTopicAndSubjectConversion / TestMQTTPublishTopicErrors
    "foo/+",
    "foo/#",
    pytest.param("", id="empty"),
    pytest.param("foo bar", id="space"),
    pytest.param("foo\tbar", id="tab"),
    pytest.param("foo\nbar", id="newline"),
    pytest.param("foo\rbar", id="carriage-return"),
    pytest.param("foo\fbar", id="form-feed"),
    # [MOSQ-UT] TEST_pub_topic_invalid
    "+pub/topic",
    "pub+/topic",
    "pub/+topic",
    "pub/topic+",
    "pub/topic/+",
    "#pub/topic",
    "pub#/topic",
    "pub/#topic",
    "pub/topic#",
    "pub/topic/#",
    "+/pub/topic",
    # [MOSQ-UT] TEST_invalid_but_matching: wildcards in the *topic* argument
    "foo/bar/+",
    "foo/bar/#",
    # DIFFERENCE: [MOSQ-UT] TEST_pub_topic_valid accepts "pub/ /topic";
    # fastflow subjects cannot carry whitespace, so it is rejected.
    pytest.param("pub/ /topic", id="mosquitto-valid-space-level"),
    # NUL and the [MQTT-5] 4.7.3 65,535-byte limit
    pytest.param("a\x00b", id="NUL"),
    pytest.param("a" * 65536, id="65536-bytes"),
]


@pytest.mark.parametrize("topic", MQTT_BAD_TOPICS)
def test_mqtt_topic_rejected(topic):
    with pytest.raises(SubjectError):
        mqtt_topic_to_subject(topic)


# Topic names that MQTT allows but a fastflow subject cannot carry. The spec
# does not say whether the translation or the match raises, so either is OK.
MQTT_UNROUTABLE_TOPICS = [
    # [NATS-MQ] TestMQTTTopicAndSubjectConversion rejects DEL as well
    pytest.param("foo\x7fbar", id="DEL"),
    pytest.param("foo\x01bar", id="ctrl-0x01"),
    # '*' / '>' are ordinary characters in MQTT; nats-server passes them
    # through ([NATS-MQ] TestMQTTFilterConversion "* literal"), which in
    # fastflow yields an invalid token or a wildcard in a publish subject.
    "foo*/bar",
    "foo/*/bar",
    "foo/>",
    # DIFFERENCE: MQTT allows up to 65,535 bytes (mosquitto: 200 levels);
    # fastflow subjects stop at 1024 bytes / 128 tokens.
    pytest.param("a" * 1025, id="1025-bytes"),
    pytest.param("/".join(["t"] * 129), id="129-levels"),
]


@pytest.mark.parametrize("topic", MQTT_UNROUTABLE_TOPICS)
def test_mqtt_topic_unroutable(topic):
    m = Matcher()
    m.add(">", "v")
    with pytest.raises(SubjectError):
        m.match(mqtt_topic_to_subject(topic))


# [NATS-MQ] TestMQTTFilterConversion: (MQTT filter, patterns, queue group).
# A trailing '#' also yields the parent-level pattern (nats-server adds a
# second "level up" subscription for it; [MQTT-311] 4.7.1.2 "sport/#" also
# matches "sport").
MQTT_FILTER_CONVERSION = [
    ("+", ["*"], None),
    ("/+", ["/.*"], None),
    ("+/", ["*./"], None),
    ("/+/", ["/.*./"], None),
    ("foo/+/bar", ["foo.*.bar"], None),
    ("foo/+/+/", ["foo.*.*./"], None),
    ("foo//+//bar", ["foo./.*./.bar"], None),
    ("foo.bar///+///baz", ["foo//bar././.*././.baz"], None),
    ("#", [">"], None),
    ("/#", ["/", "/.>"], None),
    ("/foo/#", ["/.foo", "/.foo.>"], None),
    ("foo/#", ["foo", "foo.>"], None),
    ("foo//#", ["foo./", "foo./.>"], None),
    ("foo/bar.baz/#", ["foo.bar//baz", "foo.bar//baz.>"], None),
    # $share ([MQTT-5] 4.8.2 examples; [MOSQ-SH])
    ("$share/consumer1/sport/tennis/+", ["sport.tennis.*"], "consumer1"),
    ("$share/consumer1//finance", ["/.finance"], "consumer1"),
    ("$share/one/share-test", ["share-test"], "one"),
    ("$share/g/foo/#", ["foo", "foo.>"], "g"),
    ("$share/g/#", [">"], "g"),
]


@pytest.mark.parametrize(("mqtt_filter", "patterns", "group"), MQTT_FILTER_CONVERSION)
def test_mqtt_filter_conversion(mqtt_filter, patterns, group):
    got_patterns, got_group = mqtt_filter_to_patterns(mqtt_filter)
    assert list(got_patterns) == patterns
    assert got_group == group
    for p in got_patterns:
        assert validate_pattern(p) is None


MQTT_VALID_FILTERS = [
    # [MOSQ-UT] TEST_sub_topic_valid (minus the two with a space level)
    "sub/topic",
    "sub//topic",
    "sub/+/topic",
    "+/+/+",
    "+",
    "sub/topic/#",
    "sub//topic/#",
    "sub/+/topic/#",
    "+/+/+/#",
    "#",
    # [MQTT-311] 4.7.1.2 / 4.7.1.3 non-normative "is valid" examples
    "sport/tennis/#",
    "+/tennis/#",
    "sport/+/player1",
]


@pytest.mark.parametrize("mqtt_filter", MQTT_VALID_FILTERS)
def test_mqtt_filter_valid(mqtt_filter):
    patterns, group = mqtt_filter_to_patterns(mqtt_filter)
    assert group is None
    assert len(patterns) >= 1
    m = Matcher()
    for p in patterns:
        m.add(p, "v")


# Filters mqtt_filter_to_patterns must reject (SubjectError).
MQTT_BAD_FILTERS = [
    # [MOSQ-UT] TEST_sub_topic_invalid
    "+sub/topic",
    "sub+/topic",
    "sub/+topic",
    "sub/topic+",
    "#sub/topic",
    "sub#/topic",
    "sub/#topic",
    "sub/topic#",
    "#/sub/topic",
    # [MOSQ-UT] TEST_invalid
    "foo#",
    "fo#o/",
    "foo+",
    "foo/#a",
    "#a",
    "foo/#abc",
    "#abc",
    "/#a",
    # [MOSQ-UT] TEST_invalid_but_matching (filter side)
    "+foo",
    "fo+o",
    "foo/+bar",
    "foo#/bar",
    "foo/bar#",
    # [MQTT-311] 4.7.1.2 / 4.7.1.3 "is not valid" examples
    "sport/tennis#",
    "sport/tennis/#/ranking",
    "sport+",
    # DIFFERENCE: [MOSQ-UT] TEST_sub_topic_valid accepts these (a level that
    # is a single space); fastflow subjects cannot carry whitespace.
    pytest.param("sub/ /topic", id="mosquitto-valid-space-level"),
    pytest.param("sub/ /topic/#", id="mosquitto-valid-space-level-fwc"),
    # empty, NUL, [MQTT-5] 65,535-byte limit
    pytest.param("", id="empty"),
    pytest.param("a/\x00/#", id="NUL"),
    pytest.param("a" * 65536, id="65536-bytes"),
    # $share forms: [MQTT-4.8.2-1] ShareName at least one character;
    # [MQTT-4.8.2-2] no '/', '+', '#' in it, followed by '/' and a filter;
    # [MOSQ-SH] topic_tok.c rejects "$share/g" and "$share/g/".
    "$share/",
    "$share//a",
    "$share/g",
    "$share/g/",
    "$share/+/a",
    "$share/#/a",
    "$share/a+b/t",
    "$share/a#b/t",
    "$share/g/foo#",   # valid group, invalid filter
]


@pytest.mark.parametrize("mqtt_filter", MQTT_BAD_FILTERS)
def test_mqtt_filter_rejected(mqtt_filter):
    with pytest.raises(SubjectError):
        mqtt_filter_to_patterns(mqtt_filter)


# Filters MQTT allows but fastflow cannot represent: translation or add()
# must raise (the spec does not say which step).
MQTT_UNREPRESENTABLE_FILTERS = [
    # [NATS-MQ] TestMQTTFilterConversion "* literal" / "> literal": nats-server
    # produces the literal tokens "foo*" / "foo>", which fastflow rejects.
    "foo*/bar",
    "foo>/bar",
    pytest.param("foo/\x7f/#", id="DEL"),
    pytest.param("/".join(["t"] * 129), id="129-levels"),
]


@pytest.mark.parametrize("mqtt_filter", MQTT_UNREPRESENTABLE_FILTERS)
def test_mqtt_filter_unrepresentable(mqtt_filter):
    m = Matcher()
    with pytest.raises(SubjectError):
        patterns, group = mqtt_filter_to_patterns(mqtt_filter)
        for p in patterns:
            m.add(p, "v", queue=group)


# (MQTT filter, MQTT topic name, expected) -- mosquitto_topic_matches_sub()
# semantics, checked through the translation and a Matcher.
MQTT_MATCH_VECTORS = [
    # [MOSQ-UT] TEST_valid_matching
    ("foo/#", "foo/", True),
    ("foo/#", "foo", True),
    ("foo//bar", "foo//bar", True),
    ("foo//+", "foo//bar", True),
    ("foo/+/+/baz", "foo///baz", True),
    ("foo/bar/+", "foo/bar/", True),
    ("foo/bar", "foo/bar", True),
    ("foo/+", "foo/bar", True),
    ("foo/+/baz", "foo/bar/baz", True),
    ("A/B/+/#", "A/B/B/C", True),
    ("foo/+/#", "foo/bar/baz", True),
    ("foo/+/#", "foo/bar", True),
    ("#", "foo/bar/baz", True),
    ("#", "/foo/bar", True),
    ("/#", "/foo/bar", True),
    # [MOSQ-UT] TEST_valid_no_matching
    ("test/6/#", "test/3", False),
    ("foo/bar", "foo", False),
    ("foo/+", "foo/bar/baz", False),
    ("foo/+/baz", "foo/bar/bar", False),
    ("foo/+/#", "fo2/bar/baz", False),
    ("/#", "foo/bar", False),
    ("#", "$SYS/bar", False),
    ("$BOB/bar", "$SYS/bar", False),
    # [MQTT-311] 4.7.1.2 multi-level wildcard examples
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    # [MQTT-311] 4.7.1.3 single-level wildcard examples
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    # [MQTT-311] 4.7.2 topics beginning with '$'
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    # [MQTT-311] 4.7.3 "/finance" and "finance" are different; case matters
    ("finance", "/finance", False),
    ("ACCOUNTS", "Accounts", False),
    # [MQTT-5] 4.8.2 shared subscriptions match like their inner filter, and
    # the '$' rule applies to the inner filter
    ("$share/consumer1//finance", "/finance", True),
    ("$share/consumer1/sport/tennis/+", "sport/tennis/player1", True),
    ("$share/g/#", "$SYS/foo", False),
    ("$share/g/$SYS/#", "$SYS/foo", True),
    # a '.' in a level is data, not a separator (mapping must be reversible)
    ("a/+", "a/b.c", True),
    ("a/b/+", "a.b/c", False),
    ("+/+", "a.b/c", True),
]


@pytest.mark.parametrize(("mqtt_filter", "topic", "expected"), MQTT_MATCH_VECTORS)
def test_mqtt_match_vectors(mqtt_filter, topic, expected):
    result = _mqtt_match(mqtt_filter, topic)
    # "a/#" becomes two patterns ("a", "a.>") that never match the same
    # subject, so a match yields the value exactly once.
    assert result == ([mqtt_filter] if expected else [])


def test_mqtt_shared_subscriptions_scenario():
    # [MOSQ-SH] 02-shared-qos0-v5.py: client1 subscribes to "#"; group "one"
    # = clients 2, 3, 5; group "two" = clients 3, 4.  Every publish to
    # "share-test" reaches client1 plus exactly one member of each group.
    m = Matcher()

    def subscribe(mqtt_filter, client):
        patterns, group = mqtt_filter_to_patterns(mqtt_filter)
        for p in patterns:
            m.add(p, client, queue=group)

    subscribe("#", "client1")
    subscribe("$share/one/share-test", "client2")
    subscribe("$share/one/share-test", "client3")
    subscribe("$share/two/share-test", "client3")
    subscribe("$share/two/share-test", "client4")
    subscribe("$share/one/share-test", "client5")

    one = {"client2", "client3", "client5"}
    two = {"client3", "client4"}
    subject = mqtt_topic_to_subject("share-test")
    totals = Counter()
    for _ in range(6):  # lcm(3, 2): every member gets an equal share
        result = m.match(subject)
        assert len(result) == 3
        assert result.count("client1") == 1
        rest = list(result)
        rest.remove("client1")
        a, b = rest
        assert (a in one and b in two) or (a in two and b in one)
        totals.update(result)
    assert totals == Counter(
        {"client1": 6, "client2": 2, "client5": 2, "client4": 3, "client3": 2 + 3}
    )


# ---------------------------------------------------------------------------
# (4) queue groups
# ---------------------------------------------------------------------------

def test_queue_basic_results():
    # [NATS-SL] TestSublistBasicQueueResults, step by step
    m = Matcher()
    h1 = m.add("foo", "sub1", queue="bar")
    assert m.match("foo") == ["sub1"]

    h2 = m.add("foo", "sub2", queue="baz")
    assert sorted(m.match("foo")) == ["sub1", "sub2"]

    hp = m.add("foo", "sub")
    assert sorted(m.match("foo")) == ["sub", "sub1", "sub2"]

    h3 = m.add("foo", "sub3", queue="bar")
    h4 = m.add("foo", "sub4", queue="baz")
    assert len(m) == 5
    for _ in range(4):
        r = m.match("foo")
        assert len(r) == 3
        assert "sub" in r
        assert len({"sub1", "sub3"} & set(r)) == 1
        assert len({"sub2", "sub4"} & set(r)) == 1

    m.remove(hp)
    for _ in range(4):
        r = m.match("foo")
        assert len(r) == 2
        assert len({"sub1", "sub3"} & set(r)) == 1
        assert len({"sub2", "sub4"} & set(r)) == 1

    m.remove(h1)
    for _ in range(4):
        r = m.match("foo")
        assert len(r) == 2
        assert "sub3" in r
        assert len({"sub2", "sub4"} & set(r)) == 1

    m.remove(h3)  # last member of "bar"
    for _ in range(4):
        r = m.match("foo")
        assert len(r) == 1
        assert r[0] in ("sub2", "sub4")

    m.remove(h2)
    m.remove(h4)
    assert m.match("foo") == []
    assert len(m) == 0


def test_queue_two_groups_plus_plain_round_robin():
    # nats-server queue semantics (TestSublistBasicQueueResults) with
    # fastflow's round-robin: 2 groups x 3 members + 2 plain subscribers.
    m = Matcher()
    m.add("orders.*", "plain-a")
    m.add("orders.>", "plain-b")
    group_a = [f"a{i}" for i in range(3)]
    group_b = [f"b{i}" for i in range(3)]
    for v in group_a:
        m.add("orders.eu", v, queue="A")
    for i, v in enumerate(group_b):
        # members of one group may subscribe with different patterns
        m.add(["orders.eu", "orders.*", "orders.>"][i], v, queue="B")
    totals = Counter()
    for _ in range(300):
        r = m.match("orders.eu")
        assert len(r) == 4
        assert r.count("plain-a") == 1 and r.count("plain-b") == 1
        assert sum(v in group_a for v in r) == 1
        assert sum(v in group_b for v in r) == 1
        totals.update(r)
    for v in group_a + group_b:
        assert totals[v] == 100, (v, totals)
    assert totals["plain-a"] == totals["plain-b"] == 300


def test_queue_members_on_overlapping_patterns():
    # [NATS-SL] TestSublistRaceOnMatch: queue "workers" on foo.* and foo.bar,
    # plain subscribers on foo.* and foo.bar.
    m = Matcher()
    m.add("foo.*", "w-star", queue="workers")
    m.add("foo.bar", "w-bar", queue="workers")
    m.add("foo.*", "p-star")
    m.add("foo.bar", "p-bar")
    totals = Counter()
    for _ in range(200):
        r = m.match("foo.bar")
        assert len(r) == 3
        assert "p-star" in r and "p-bar" in r
        assert sum(v in ("w-star", "w-bar") for v in r) == 1
        totals.update(r)
    assert totals["w-star"] == totals["w-bar"] == 100
    # only one worker's pattern matches foo.baz
    for _ in range(3):
        assert sorted(m.match("foo.baz")) == ["p-star", "w-star"]


def test_queue_results_are_not_matched_on_invalid_subjects():
    # [NATS-SL] TestSublistMatchWithEmptyTokens (plain ">" and queue ">")
    m = Matcher()
    m.add(">", "plain")
    m.add(">", "queued", queue="queue")
    for subject in (".foo", "..foo", "foo..", "foo.", "foo..bar", "foo...bar"):
        with pytest.raises(SubjectError):
            m.match(subject)
    assert sorted(m.match("foo")) == ["plain", "queued"]
