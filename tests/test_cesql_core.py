"""CESQL programs in the cores: the compiled evaluator (src_ext/cesql.pyx)
against the pure-Python one (fastflow/_ref/cesql.py) on random expressions
and events, given as mappings, as Events and as records stored in a real
Flow stream (memory and file-backed); the batch form; the checks a
program gets when it is built.  (test_cesql.py runs the TCK on both.)"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastflow
from fastflow import _cesqlcode as C
from fastflow import _ref, cesql

from conftest import CORES, both_cores

# -- random expressions -------------------------------------------------------------------

NAMES = ["type", "source", "id", "specversion", "subject", "amount", "flag", "name", "sig",
         "missing", "ffhops"]
FUNCTIONS = ["LENGTH", "LOWER", "UPPER", "TRIM", "LEFT", "RIGHT", "SUBSTRING", "ABS", "INT",
             "BOOL", "STRING", "CONCAT", "CONCAT_WS", "FOO"]
TEXT = st.text(alphabet="ab%_.-/01é€ 9TrUeFALS", max_size=6)


def quote(s):
    return "'" + s.replace("\\", "").replace("'", "\\'") + "'"


literals = st.one_of(
    st.integers(-2 ** 31, 2 ** 31 - 1).map(str),
    st.sampled_from(["0", "1", "-1", "100", "2147483647", "-2147483648"]),
    TEXT.map(quote),
    st.sampled_from(["TRUE", "FALSE", "'true'", "'FALSE'", "'10'", "' 1'"]),
)
leaves = st.one_of(literals, st.sampled_from(NAMES),
                   st.sampled_from(NAMES).map(lambda n: "EXISTS " + n))
LIKE_PATTERNS = st.text(alphabet="ab%_/é.0", max_size=5) | st.sampled_from(
    ["/eu/%", "%.order", "a\\%", "a\\_b", "%", "_", "%a%"])


def _compose(children):
    unary = st.tuples(st.sampled_from(["NOT ", "-"]), children).map(lambda t: t[0] + t[1])
    binary = st.tuples(children, st.sampled_from(
        ["+", "-", "*", "/", "%", "=", "!=", "<>", "<", "<=", ">", ">=", "AND", "OR", "XOR"]),
        children).map(lambda t: "({} {} {})".format(*t))
    like = st.tuples(children, st.booleans(), LIKE_PATTERNS).map(
        lambda t: "({} {}LIKE {})".format(t[0], "NOT " if t[1] else "", quote(t[2])))
    in_ = st.tuples(children, st.booleans(), st.lists(children, min_size=1, max_size=3)).map(
        lambda t: "({} {}IN ({}))".format(t[0], "NOT " if t[1] else "", ", ".join(t[2])))
    call = st.tuples(st.sampled_from(FUNCTIONS), st.lists(children, max_size=3)).map(
        lambda t: "{}({})".format(t[0], ", ".join(t[1])))
    return st.one_of(unary, binary, like, in_, call)


expressions = st.recursive(leaves, _compose, max_leaves=8)

VALUES = st.one_of(TEXT, st.integers(-2 ** 31, 2 ** 31 - 1), st.booleans(),
                   st.binary(max_size=5), st.sampled_from(["10", "true", "/eu/x", "a%b"]))
events = st.fixed_dictionaries(
    {"type": st.sampled_from(["com.acme.order", "a.b", "é"]),
     "source": st.sampled_from(["/eu/shop", "/us/", "/eu/", "x"])},
    optional={"subject": TEXT.filter(bool), "amount": VALUES, "flag": VALUES, "name": VALUES,
              "sig": VALUES})


def outcome(program, event, fail_fast=False):
    """What a program answers, errors as (class, message)."""
    value, errors = program.evaluate(event, fail_fast)
    return (value, type(value), [(type(e).__name__, str(e)) for e in errors])


def programs(text):
    """The program of ``text`` for each core."""
    p = cesql.compile(text).program
    return {name: core.CesqlProgram(p.code, p.consts, p.type) for name, core in CORES.items()}


def agree(text, inputs):
    """Both cores give the same answers (both modes, matches) on every input."""
    progs = programs(text)
    ref = progs["ref"]
    for event in inputs:
        expected = [outcome(ref, event), outcome(ref, event, True), ref.matches(event)]
        for name, prog in progs.items():
            got = [outcome(prog, event), outcome(prog, event, True), prog.matches(event)]
            assert got == expected, (name, text, event)


@both_cores
@settings(max_examples=400, deadline=None)
@given(text=expressions, attributes=events)
def test_native_and_ref_agree_on_mappings_and_events(text, attributes):
    try:
        cesql.compile(text)
    except cesql.CesqlParseError:
        return
    agree(text, [attributes, fastflow.Event("orders.eu", b"", **attributes)])


@both_cores
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=expressions, batch=st.lists(events, min_size=1, max_size=6))
def test_native_and_ref_agree_on_stored_records(text, batch, tmp_path_factory):
    try:
        compiled = cesql.compile(text)
    except cesql.CesqlParseError:
        return
    flow = fastflow.Flow()
    stream = flow.add_stream("s", [">"])
    for attributes in batch:
        flow.publish("orders.eu", b"{}", **attributes)
    records = [stream.log.get(seq) for seq in range(1, len(batch) + 1)]
    decoded = [stream.get(seq) for seq in range(1, len(batch) + 1)]
    agree(text, records + decoded)
    progs = programs(text)
    read = stream.log.read(1, 100)
    wanted = [i for i, ev in enumerate(decoded) if progs["ref"].matches(ev)]
    assert progs["native"].match_batch(read) == wanted
    assert progs["ref"].match_batch(read) == wanted
    assert compiled.match_batch(read) == wanted
    flow.close()


ORDERS = [
    dict(type="com.acme.order", source="/eu/shop", amount=150),
    dict(type="com.acme.order", source="/eu/shop", amount=100),
    dict(type="com.acme.order", source="/us/shop", amount=500),
    dict(type="com.acme.refund", source="/eu/shop", amount=900),
    dict(type="com.acme.order", source="/eu/", amount="101"),
    dict(type="com.acme.order", source="/eu/x", subject="no amount"),
    dict(source="/eu/é", amount=2 ** 31 - 1, sig=b"\x00\xff", flag=True),
]
FILTER = "type = 'com.acme.order' AND source LIKE '/eu/%' AND amount > 100"


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_filter_over_a_stream_of_both_storages(core, storage, tmp_path):
    flow = fastflow.Flow(data_dir=str(tmp_path)) if storage == "file" else fastflow.Flow()
    stream = flow.add_stream("orders", ["orders.>"], storage=storage)
    for i, attributes in enumerate(ORDERS):
        flow.publish("orders.{}".format(i), b"{}", **attributes)
    program = cesql.compile(FILTER).program
    program = core.CesqlProgram(program.code, program.consts, program.type)
    batch = stream.log.read(1, 100)
    assert program.match_batch(batch) == [0, 4]
    assert [program.matches(stream.log.get(s)) for s in range(1, 8)] == [
        True, False, False, False, True, False, False]
    value, errors = program.evaluate(stream.log.get(6))
    assert (value, [type(e) for e in errors]) == (False, [cesql.MissingAttributeError])
    flow.close()


def test_compile_uses_the_selected_core():
    assert type(cesql.compile("TRUE").program) is fastflow._impl.CesqlProgram


def test_record_attributes_read_from_the_record(core):
    flow = fastflow.Flow()
    stream = flow.add_stream("s", [">"])
    flow.publish("a.b", b"", sig=b"\x01\x02\x03", n=-7, big="x" * 300, name="Ada")
    flow.publish("a.c", b"", type="t", id="my-id", source="/s")
    rec1, rec2 = stream.log.get(1), stream.log.get(2)

    def value(text, rec):
        p = cesql.compile(text).program
        return core.CesqlProgram(p.code, p.consts, p.type).evaluate(rec)[0]

    assert value("type", rec1) == "a.b"
    assert value("id", rec1) == stream.get(1).id
    assert value("sig", rec1) == "AQID"
    assert value("n * 2", rec1) == -14
    assert value("LENGTH(big)", rec1) == 300
    assert value("UPPER(name)", rec1) == "ADA"
    assert (value("id", rec2), value("type", rec2), value("source", rec2)) == ("my-id", "t", "/s")
    assert value("EXISTS sig", rec2) is False
    flow.close()


BAD_PROGRAMS = [
    ((), (), C.T_BOOLEAN, "at least one instruction"),
    (((C.PUSH, 3, 0),), (1,), C.T_INTEGER, "names constant 3 of 1"),
    (((C.NOT, 0, 0),), (), C.T_BOOLEAN, "pops more than the stack holds"),
    (((C.PUSH, 0, 0), (C.PUSH, 0, 0)), (1,), C.T_INTEGER, "leaves 2 values"),
    (((C.PUSH, 0, 0), (C.LOGIC, C.AND, 0), (C.PUSH, 0, 0), (C.LOGIC2, C.AND, 0)),
     (True,), C.T_BOOLEAN, "jumps to 0"),
    (((99, 0, 0),), (), C.T_BOOLEAN, "unknown CESQL instruction 99"),
    (((C.PUSH, 0, 0),), (2 ** 40,), C.T_INTEGER, "outside 32 bits"),
]


@both_cores
@pytest.mark.parametrize("code, consts, type_, message", BAD_PROGRAMS)
def test_the_native_program_checks_what_it_runs(code, consts, type_, message):
    with pytest.raises(ValueError, match=message):
        CORES["native"].CesqlProgram(code, consts, type_)


def test_fail_fast_runs_nothing_after_the_first_error(core):
    # ('a' = 1) OR body('a'): the cast error decides; fail-fast never calls body
    calls = []

    def body(x):
        calls.append(x)
        return True, None

    code = [(C.PUSH, 0, 0), (C.PUSH, 1, 0), (C.COMPARE, C.EQ, 0), (C.LOGIC, C.OR, 7),
            (C.PUSH, 0, 0), (C.CALL, 2, 1), (C.LOGIC2, C.OR, 0)]
    program = core.CesqlProgram(code, ("a", 1, ((C.T_STRING,), C.T_BOOLEAN, body)),
                                C.T_BOOLEAN)
    value, errors = program.evaluate({}, fail_fast=True)
    assert (value, [type(e) for e in errors], calls) == (False, [cesql.CastError], [])
    assert program.matches({}) is False and calls == []
    value, errors = program.evaluate({})
    assert (value, [type(e) for e in errors], calls) == (False, [cesql.CastError], ["a"])


def test_ref_program_reads_any_mapping():
    program = _ref.CesqlProgram(*_parts("a + 1"))
    assert program.evaluate({"a": "41"}) == (42, [])


def _parts(text):
    p = cesql.compile(text).program
    return p.code, p.consts, p.type
