"""fastflow/_core.pyi is the declared contract of a core.  Both cores, the
compiled fastflow._core (when built) and the pure-Python reference, provide
every name of the stub's ``__all__``, of the kind the stub declares (class,
function or constant), and every method and attribute its class bodies
declare.  The stub also declares every public class and function that
fastflow._core defines, so that it stays the one place to read the core's
API.  The names come from the stub alone: when the core's names change, the
stub is what changes (the reference core is the ``core`` fixture's, from
conftest.py)."""

import ast
import inspect
import os
import re

import pytest

import fastflow.errors

from conftest import CORES
from peers import REPO

STUB = os.path.join(REPO, "fastflow", "_core.pyi")

# Members of the contract that the reference does not have yet ("Class.member": what it
# lacks).  The test fails once the reference has one, so that it leaves this table.
REF_GAPS = {
    "MatchBatch.matcher": "the native MatchBatch keeps its Matcher public",
    "Record.log": "the native Record keeps its Log public",
}


def _members(node):
    """{name: "method" or "attribute"} of a class body of the stub; a
    property is an attribute."""
    out = {}
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            prop = any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
            out[item.name] = "attribute" if prop else "method"
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            out[item.target.id] = "attribute"
    return out


def read_stub(path=STUB):
    """The names the stub declares at module level, {name: (kind, members)}
    (kind "class", "function" or "constant"; members of a class as
    ``_members`` gives them), and its ``__all__``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    declared, exported = {}, None
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = ("class", _members(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            declared[node.name] = ("function", {})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared[node.target.id] = ("constant", {})
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == \
                ["__all__"]:
            exported = ast.literal_eval(node.value)
    assert exported, "{} has no __all__: the contract's names".format(path)
    undeclared = sorted(set(exported) - set(declared))
    assert not undeclared, "{} lists in __all__ names it does not declare: {}".format(
        path, ", ".join(undeclared))
    return declared, exported


DECLARED, EXPORTED = read_stub()


def _kind(obj):
    if inspect.isclass(obj):
        return "class"
    return "function" if callable(obj) else "constant"


def _sets_attribute(cls, member):
    """Whether a class of ``cls``'s MRO assigns ``self.<member>`` in its
    source; None when a source cannot be read (a compiled class)."""
    assign = re.compile(r"\bself\.{}\s*=(?!=)".format(re.escape(member)))
    for k in cls.__mro__:
        if k.__module__ == "builtins":
            continue
        try:
            if assign.search(inspect.getsource(k)):
                return True
        except (OSError, TypeError):
            return None
    return False


def _missing_members(core, cls, name, members):
    """What the class ``cls`` of ``core`` lacks of the members the stub
    declares for class ``name``, as sentences."""
    problems = []
    for member, kind in sorted(members.items()):
        gap = "{}.{}".format(name, member)
        present = hasattr(cls, member)
        if not core.COMPILED and gap in REF_GAPS:
            if present:
                problems.append("{} is no longer a gap of the reference: remove it from "
                                "REF_GAPS".format(gap))
            continue
        if not present:
            # an attribute of a class whose instances keep a __dict__ may be set per
            # instance: then its source (when there is one) assigns it
            if not (kind == "attribute" and cls.__dictoffset__
                    and _sets_attribute(cls, member) is not False):
                problems.append("no {} {}".format(kind, gap))
        elif kind == "method" and not callable(getattr(cls, member)):
            problems.append("{} is not a method".format(gap))
        elif kind == "attribute" and inspect.isroutine(getattr(cls, member)):
            problems.append("{} is a method, declared as an attribute".format(gap))
    return problems


@pytest.mark.parametrize("name", EXPORTED)
def test_the_core_provides_the_declared_name(core, name):
    kind, members = DECLARED[name]
    assert hasattr(core, name), "the core has no {} {} (declared in {})".format(kind, name, STUB)
    obj = getattr(core, name)
    assert _kind(obj) == kind, "{} is a {} in the core, a {} in {}".format(
        name, _kind(obj), kind, STUB)
    if kind == "class":
        problems = _missing_members(core, obj, name, members)
        assert not problems, "the core's {} differs from {}:\n  {}".format(
            name, STUB, "\n  ".join(problems))


def test_the_core_exports_the_declared_names_and_the_errors(core):
    # the core's __all__ (what fastflow._impl re-exports) is the stub's, plus the
    # error classes it takes from fastflow.errors
    exported = set(core.__all__)
    assert set(EXPORTED) <= exported, "missing from {}.__all__: {}".format(
        core.__name__, sorted(set(EXPORTED) - exported))
    extra = sorted(n for n in exported - set(EXPORTED)
                   if getattr(fastflow.errors, n, None) is not getattr(core, n))
    assert not extra, "{}.__all__ exports what {} does not declare: {}".format(
        core.__name__, STUB, extra)


@pytest.mark.skipif("native" not in CORES, reason="one core only: FASTFLOW_NO_EXTENSIONS=1")
def test_the_stub_declares_every_class_and_function_of_the_native_core():
    core = CORES["native"]
    defined = sorted(n for n, obj in vars(core).items()
                     if not n.startswith("_") and callable(obj)
                     and getattr(obj, "__module__", None) == core.__name__)
    undeclared = [n for n in defined if n not in DECLARED]
    assert not undeclared, "{} defines what {} does not declare: {}".format(
        core.__name__, STUB, ", ".join(undeclared))


def test_read_stub_reads_kinds_members_and_exports(tmp_path):
    stub = tmp_path / "core.pyi"
    stub.write_text("__all__ = ['C', 'f', 'K']\n"
                    "K: int\n"
                    "def f(x: int) -> int: ...\n"
                    "class C:\n"
                    "    a: int\n"
                    "    @property\n"
                    "    def p(self) -> int: ...\n"
                    "    def m(self) -> None: ...\n"
                    "    async def am(self) -> None: ...\n"
                    "class Helper: ...\n")
    declared, exported = read_stub(str(stub))
    assert exported == ["C", "f", "K"]
    assert declared == {"K": ("constant", {}), "f": ("function", {}), "Helper": ("class", {}),
                        "C": ("class", {"a": "attribute", "p": "attribute", "m": "method",
                                        "am": "method"})}
    stub.write_text("__all__ = ['C', 'gone']\nclass C: ...\n")
    with pytest.raises(AssertionError, match="names it does not declare: gone"):
        read_stub(str(stub))


def test_the_core_numbers_the_protocol_as_fastflow_protocol(core):
    # src_ext/wire/proto.pxi (and the twin's wire/proto.py) against fastflow/protocol.py
    from fastflow.protocol import Flag, Op

    assert core.OPS == {op.name: int(op) for op in Op}
    assert core.FLAGS == {"ACK": int(Flag.ACK), "NO_RESPONDERS": int(Flag.NO_RESPONDERS),
                          "CLOSE": int(Flag.CLOSE)}


def test_the_wire_target_base_is_abstract(core):
    with pytest.raises(TypeError, match="base of the protocols"):
        core.WireTarget(core.OutBuf())
