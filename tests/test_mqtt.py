"""MQTT topic/filter translation, checked against paho-mqtt's own matcher."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastflow import (
    Matcher,
    SubjectError,
    mqtt_filter_to_patterns,
    mqtt_topic_to_subject,
    subject_to_mqtt_topic,
)


@pytest.mark.parametrize("topic, subject", [
    ("a/b/c", "a.b.c"),
    ("a", "a"),
    ("/a", "/.a"),
    ("a/", "a./"),
    ("/", "/./"),
    ("a//b", "a./.b"),
    ("v1.2/x", "v1//2.x"),
    ("$SYS/broker/load", "$SYS.broker.load"),
    ("sensors/温度", "sensors.温度"),
])
def test_topic_to_subject(topic, subject):
    assert mqtt_topic_to_subject(topic) == subject
    assert subject_to_mqtt_topic(subject) == topic


@pytest.mark.parametrize("filt, patterns, queue", [
    ("a/b", ["a.b"], None),
    ("a/+/c", ["a.*.c"], None),
    ("a/#", ["a", "a.>"], None),
    ("a/+/#", ["a.*", "a.*.>"], None),
    ("#", [">"], None),
    ("+", ["*"], None),
    ("/#", ["/", "/.>"], None),
    ("+/+", ["*.*"], None),
    ("$share/workers/jobs/#", ["jobs", "jobs.>"], "workers"),
    ("$share/g/+", ["*"], "g"),
    ("$SYS/#", ["$SYS", "$SYS.>"], None),
])
def test_filter_to_patterns(filt, patterns, queue):
    assert mqtt_filter_to_patterns(filt) == (patterns, queue)


@pytest.mark.parametrize("filt, msg", [
    ("", r"invalid MQTT filter '': empty"),
    ("a/#/b", r"'#' must be the last level \(found at level 2 of 3\)"),
    ("a#", r"'#' must occupy a whole level \(level 1 is 'a#'\)"),
    ("a/b+", r"'\+' must occupy a whole level \(level 2 is 'b\+'\)"),
    ("a/\x00", r"NUL character in level 2"),
    ("a b", r"character ' ' in level 1 'a b' cannot be carried"),
    ("foo/*/bar", r"character '\*' in level 2 '\*' cannot be carried"),
    ("foo/a>", r"character '>' in level 2 'a>' cannot be carried"),
    ("$share//a", r"empty share name"),
    ("$share/g", r"no topic filter after the share name 'g'"),
    ("$share/g/", r"no topic filter after the share name 'g'"),
    ("$share/g+/a", r"share name 'g\+' contains '\+'"),
    ("x" * 65536, r"65536 bytes, the limit is 65535"),
    ("x" * 2000, r"translates to invalid pattern .*2000 bytes, the limit is 1024"),
])
def test_bad_filters(filt, msg):
    with pytest.raises(SubjectError, match=msg):
        mqtt_filter_to_patterns(filt)


@pytest.mark.parametrize("topic, msg", [
    ("", r"invalid MQTT topic '': empty"),
    ("a/+", r"wildcard '\+' in level 2: a topic name must be literal"),
    ("#", r"wildcard '#' in level 1"),
    ("a\x00", r"NUL character"),
    ("a/b c", r"character ' '"),
])
def test_bad_topics(topic, msg):
    with pytest.raises(SubjectError, match=msg):
        mqtt_topic_to_subject(topic)


def test_types():
    with pytest.raises(TypeError, match="MQTT filter must be str or bytes, not int"):
        mqtt_filter_to_patterns(5)
    assert mqtt_topic_to_subject(b"a/b") == "a.b"
    with pytest.raises(SubjectError, match="not valid UTF-8"):
        mqtt_topic_to_subject(b"a/\xff")


def test_subject_with_mqtt_wildcard_chars_is_not_a_topic():
    with pytest.raises(SubjectError, match="cannot be an MQTT topic"):
        subject_to_mqtt_topic("a.b+c")


def test_shared_subscription_is_a_queue_group():
    m = Matcher()
    pats, q = mqtt_filter_to_patterns("$share/g/sensors/+/temp")
    for i in range(2):
        for p in pats:
            m.add(p, i, queue=q)
    got = [m.match(mqtt_topic_to_subject("sensors/k1/temp")) for _ in range(4)]
    assert sorted(v for r in got for v in r) == [0, 0, 1, 1]


# -- the translation against paho-mqtt's MQTTMatcher (the MQTT semantics oracle) --

LEVELS = st.sampled_from(["a", "b", "", "$x", "c.d", "é"])
topics = st.lists(LEVELS, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def filters(draw):
    levels = draw(st.lists(st.one_of(LEVELS, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    f = "/".join(levels)
    return f or "#"


@settings(max_examples=500, deadline=None)
@given(filts=st.lists(filters(), min_size=1, max_size=6, unique=True),
       tops=st.lists(topics, min_size=1, max_size=6))
def test_matching_equals_paho(filts, tops):
    matcher_mod = pytest.importorskip("paho.mqtt.matcher")
    paho = matcher_mod.MQTTMatcher()
    m = Matcher()
    for f in filts:
        paho[f] = f
        pats, queue = mqtt_filter_to_patterns(f)
        assert queue is None
        for p in pats:
            m.add(p, f)
    for t in tops:
        expect = sorted(paho.iter_match(t))
        got = sorted(m.match(mqtt_topic_to_subject(t)))
        assert got == expect, (t, filts)


@settings(max_examples=300, deadline=None)
@given(topic=topics)
def test_topic_round_trip(topic):
    assert subject_to_mqtt_topic(mqtt_topic_to_subject(topic)) == topic

